//! Topology: creating a topic with its delay topics, and a group's retry
//! and dead-letter topics, once per handle.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;

use super::broker::{blocking, KafkaBroker};
use super::{check_group, check_topic, delay_topic, dlq_topic, err, retry_topic, BACKEND, LEVELS};
use crate::error::{Error, Result};

impl KafkaBroker {
    /// Creates topics that do not exist yet, and waits until the cluster's
    /// metadata shows them (consumers and producers look there).
    pub(super) async fn create_topics(&self, wanted: Vec<(String, i32, bool)>) -> Result<()> {
        let new: Vec<NewTopic<'_>> = wanted
            .iter()
            .map(|(name, partitions, compacted)| {
                let t = NewTopic::new(name, *partitions, TopicReplication::Fixed(-1));
                if *compacted {
                    t.set("cleanup.policy", "compact")
                } else {
                    t
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in self.admin.create_topics(new.iter(), &opts).await.map_err(err)? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Backend { backend: BACKEND, reason: format!("creating topic `{name}`: {code}") })
                }
            }
        }
        let producer = self.outbox.producer.clone();
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

    /// The topic and its delay topics exist.
    pub(super) async fn ensure_topic(&self, topic: &str) -> Result<()> {
        check_topic(topic)?;
        if self.topics_ready.lock().unwrap().contains(topic) {
            return Ok(());
        }
        let mut wanted = vec![(topic.to_string(), self.options.partitions, false)];
        wanted.extend(LEVELS.iter().map(|l| (delay_topic(topic, *l), self.options.retry_partitions, false)));
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
        let mut wanted: Vec<(String, i32, bool)> =
            LEVELS.iter().map(|l| (retry_topic(topic, group, *l), self.options.retry_partitions, false)).collect();
        wanted.push((dlq_topic(topic, group), 1, true));
        self.create_topics(wanted).await?;
        self.groups_ready.lock().unwrap().insert(key);
        Ok(())
    }
}
