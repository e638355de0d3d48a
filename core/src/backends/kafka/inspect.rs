//! Inspection: a group's figures (committed offsets and delivery records
//! beside the watermarks), a topic's groups, a group's consumers and the
//! partitions each holds (read from the consumer protocol's assignment).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::TopicPartitionList;

use super::broker::{blocking, KafkaBroker};
use super::reader::Marks;
use super::{check_topic, consumer_group, decode_group, delay_topic, dlq_topic, err, retry_topic, LEVELS};
use crate::broker::{Broker, ConsumerInfo, GroupStats, PartitionLag};
use crate::error::Result;

impl KafkaBroker {
    fn inspector(&self, topic: &str, group: &str) -> Result<Arc<BaseConsumer>> {
        let id = consumer_group(topic, group);
        let mut inspectors = self.inspectors.lock().unwrap();
        if let Some(c) = inspectors.get(&id) {
            return Ok(Arc::clone(c));
        }
        let mut config = self.options.client_config();
        config.set("group.id", &id).set("enable.auto.commit", "false");
        let c: Arc<BaseConsumer> = Arc::new(config.create().map_err(err)?);
        inspectors.insert(id, Arc::clone(&c));
        Ok(c)
    }

    pub(super) async fn group_stats(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.check_open()?;
        self.ensure_group(topic, group).await?;
        let inspector = self.inspector(topic, group)?;
        let producer = self.outbox.producer.clone();
        let (topic_s, group_s) = (topic.to_string(), group.to_string());
        let mut stats = blocking(move || {
            // Right after a topic is created its partitions may have no
            // leader yet, and right after the broker starts (or a
            // coordinator moves) the group's coordinator is not ready:
            // such answers are transient, so look again.
            let mut tries = 0;
            loop {
                match group_figures(&producer, &inspector, &topic_s, &group_s) {
                    Err(e) if tries < 25 && worth_asking_again(&e) => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    figures => return figures.map_err(err),
                }
            }
        })
        .await?;
        let views = Arc::clone(&self.dead_letters);
        let (dlq, topic_s, group_s) = (dlq_topic(topic, group), topic.to_string(), group.to_string());
        stats.dead_letters = blocking(move || views.count(&dlq, &topic_s, &group_s)).await?;
        Ok(stats)
    }

    pub(super) async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        self.check_open()?;
        check_topic(topic)?;
        let producer = self.outbox.producer.clone();
        let prefix = format!("{topic}.");
        blocking(move || {
            let md = producer.client().fetch_metadata(None, Duration::from_secs(10)).map_err(err)?;
            let mut groups: Vec<String> = md
                .topics()
                .iter()
                .filter_map(|t| t.name().strip_prefix(&prefix)?.strip_suffix(".dlq").and_then(decode_group))
                .collect();
            groups.sort();
            Ok(groups)
        })
        .await
    }

    pub(super) async fn list_consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.check_open()?;
        check_topic(topic)?;
        let producer = self.outbox.producer.clone();
        let (id, topic) = (consumer_group(topic, group), topic.to_string());
        blocking(move || {
            let list = producer.client().fetch_group_list(Some(&id), Duration::from_secs(10)).map_err(err)?;
            let mut consumers = Vec::new();
            for g in list.groups().iter().filter(|g| g.name() == id) {
                for member in g.members() {
                    // Workers name their Kafka client after themselves.
                    let mut c = ConsumerInfo::named(match member.client_id() {
                        "" | "rdkafka" => member.id(),
                        name => name,
                    });
                    c.partitions = member.assignment().map(|a| assigned_partitions(a, &topic)).unwrap_or_default();
                    consumers.push(c);
                }
            }
            Ok(consumers)
        })
        .await
    }
}

/// A group's figures from the broker: committed offsets and delivery
/// records beside each partition's watermarks, over the topic and its
/// retry and delay topics.
fn group_figures(
    producer: &FutureProducer,
    inspector: &BaseConsumer,
    topic: &str,
    group: &str,
) -> std::result::Result<GroupStats, KafkaError> {
    let t = Duration::from_secs(10);
    let md = producer.client().fetch_metadata(None, t)?;
    let partitions: HashMap<&str, usize> = md.topics().iter().map(|t| (t.name(), t.partitions().len())).collect();
    // Which figure each topic's messages count towards.
    let mut sources: Vec<(String, bool)> = vec![(topic.to_string(), true), (retry_topic(topic, group, 0), true)];
    for level in LEVELS {
        sources.push((delay_topic(topic, level), false));
        if level > 0 {
            sources.push((retry_topic(topic, group, level), false));
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (name, _) in &sources {
        for p in 0..partitions.get(name.as_str()).copied().unwrap_or(0) {
            tpl.add_partition(name, p as i32);
        }
    }
    let committed = inspector.committed_offsets(tpl, t)?;
    let mut stats =
        GroupStats { topic: topic.to_string(), group: group.to_string(), in_flight: Some(0), ..Default::default() };
    for (name, ready_now) in &sources {
        for p in 0..partitions.get(name.as_str()).copied().unwrap_or(0) {
            let p = p as i32;
            let (low, high) = inspector.fetch_watermarks(name, p, t)?;
            let elem = committed.find_partition(name, p);
            let offset = elem.as_ref().and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0);
            let start = offset.unwrap_or(low).max(low).min(high);
            let marks = elem.as_ref().map(|e| Marks::parse(e.metadata())).unwrap_or_default();
            let handed = marks.through().map_or(0, |t| (t + 1).clamp(start, high) - start);
            let rest = (high - start - handed).max(0) as u64;
            *stats.in_flight.get_or_insert(0) += handed as u64;
            if *ready_now {
                stats.ready += rest;
            } else {
                stats.waiting += rest;
            }
            if name == topic {
                stats.partitions.push(PartitionLag { partition: p, committed: offset, end: high, lag: high - start });
            }
        }
    }
    Ok(stats)
}

/// A partition without a known leader (a topic just created, a leader
/// moving), or a group coordinator not ready yet (the broker just started,
/// `__consumer_offsets` still loading, a coordinator moving): worth asking
/// again in a moment. A committed-offsets fetch right after a fresh broker's
/// start failed with `NotCoordinator` in a CI run.
fn worth_asking_again(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
        )
    )
}

/// The partitions of `topic` in a member's assignment, as the consumer
/// protocol encodes it: version (i16), then per topic its name (i16 length,
/// bytes) and partitions (i32 count, i32 each); user data follows.
fn assigned_partitions(assignment: &[u8], topic: &str) -> Vec<i32> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn i16_of(b: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(b, 2)?.try_into().ok()?))
    }
    fn i32_of(b: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(b, 4)?.try_into().ok()?))
    }
    let parse = |mut b: &[u8]| -> Option<Vec<i32>> {
        i16_of(&mut b)?;
        let mut mine = Vec::new();
        for _ in 0..i32_of(&mut b)?.max(0) {
            let len = i16_of(&mut b)?.max(0) as usize;
            let name = take(&mut b, len)?;
            for _ in 0..i32_of(&mut b)?.max(0) {
                let p = i32_of(&mut b)?;
                if name == topic.as_bytes() {
                    mine.push(p);
                }
            }
        }
        mine.sort_unstable();
        Some(mine)
    };
    parse(assignment).unwrap_or_default()
}

#[cfg(test)]
mod assignment_tests {
    use super::assigned_partitions;

    #[test]
    fn the_topics_partitions_are_read_from_an_assignment() {
        let mut b = vec![0, 0]; // version
        b.extend(2i32.to_be_bytes()); // two topics
        for (name, parts) in [("orders", &[2i32, 0][..]), ("orders.retry", &[0i32][..])] {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(assigned_partitions(&b, "orders"), vec![0, 2]);
        assert_eq!(assigned_partitions(&b, "other"), Vec::<i32>::new());
        assert_eq!(assigned_partitions(&b[..5], "orders"), Vec::<i32>::new(), "a truncated assignment reads as none");
    }
}
