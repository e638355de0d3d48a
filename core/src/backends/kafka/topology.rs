//! Topology: creating a topic with its delay topics, and a group's retry
//! and dead-letter topics, once per handle, replicated as the URL says or
//! as fits the cluster.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, Producer};

use super::broker::{blocking, KafkaBroker};
use super::{check_group, check_topic, delay_topic, dlq_topic, err, retry_topic, Options, BACKEND, LEVELS};
use crate::error::{Error, Result};

/// A topic to create: its name, partitions and settings.
pub(super) type TopicSpec = (String, i32, &'static [(&'static str, &'static str)]);

/// Settings of a compacted topic (a dead-letter topic).
pub(super) const COMPACTED: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// Replicas and `min.insync.replicas` of the topics to create: the URL's,
/// else what fits the cluster (3 and 2 with three brokers or more; on fewer,
/// one replica per broker and 1).
async fn replication(producer: &FutureProducer, options: &Options) -> Result<(i32, i32)> {
    let factor = match options.replication_factor {
        Some(factor) => factor,
        None => {
            let producer = producer.clone();
            let brokers = blocking(move || {
                let md = producer.client().fetch_metadata(None, Duration::from_secs(10)).map_err(err)?;
                Ok(md.brokers().len() as i32)
            })
            .await?;
            brokers.clamp(1, 3)
        }
    };
    let insync = options.min_insync_replicas.unwrap_or(if factor >= 3 { 2 } else { 1 });
    Ok((factor, insync))
}

/// Creates topics that do not exist yet, and waits until the cluster's
/// metadata shows them (consumers and producers look there).
pub(super) async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    producer: &FutureProducer,
    options: &Options,
    wanted: Vec<TopicSpec>,
) -> Result<()> {
    let (factor, insync) = replication(producer, options).await?;
    let insync = insync.to_string();
    let new: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, partitions, settings)| {
            let topic =
                NewTopic::new(name, *partitions, TopicReplication::Fixed(factor)).set("min.insync.replicas", &insync);
            settings.iter().fold(topic, |t, (k, v)| t.set(k, v))
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(new.iter(), &opts).await.map_err(err)? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Backend { backend: BACKEND, reason: format!("creating topic `{name}`: {code}") })
            }
        }
    }
    let producer = producer.clone();
    let names: Vec<String> = wanted.into_iter().map(|w| w.0).collect();
    blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let md = producer.client().fetch_metadata(None, Duration::from_secs(10)).map_err(err)?;
            let present: HashSet<&str> = md
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.name())
                .collect();
            if names.iter().all(|n| present.contains(n.as_str())) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout { operation: "topic creation", after: Duration::from_secs(30) });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
}

impl KafkaBroker {
    pub(super) async fn create_topics(&self, wanted: Vec<TopicSpec>) -> Result<()> {
        create_topics(&self.admin, &self.outbox.producer, &self.options, wanted).await
    }

    /// The topic and its delay topics exist.
    pub(super) async fn ensure_topic(&self, topic: &str) -> Result<()> {
        check_topic(topic)?;
        if self.topics_ready.lock().unwrap().contains(topic) {
            return Ok(());
        }
        let mut wanted: Vec<TopicSpec> = vec![(topic.to_string(), self.options.partitions, &[])];
        wanted.extend(LEVELS.iter().map(|l| (delay_topic(topic, *l), self.options.retry_partitions, &[][..])));
        self.create_topics(wanted).await?;
        self.topics_ready.lock().unwrap().insert(topic.to_string());
        Ok(())
    }

    pub(super) async fn create_group(&self, topic: &str, group: &str) -> Result<()> {
        self.check_open()?;
        check_group(topic, group)?;
        self.ensure_topic(topic).await?;
        let key = (topic.to_string(), group.to_string());
        if self.groups_ready.lock().unwrap().contains(&key) {
            return Ok(());
        }
        let mut wanted: Vec<TopicSpec> =
            LEVELS.iter().map(|l| (retry_topic(topic, group, *l), self.options.retry_partitions, &[][..])).collect();
        wanted.push((dlq_topic(topic, group), 1, COMPACTED));
        self.create_topics(wanted).await?;
        self.groups_ready.lock().unwrap().insert(key);
        Ok(())
    }
}
