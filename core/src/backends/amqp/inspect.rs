//! Inspection: a group's figures (ready, waiting and dead letters over
//! AMQP, in flight from the management API), its consumers, and a topic's groups.

use std::sync::atomic::Ordering;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::broker::AmqpBroker;
use super::topology::{dlq, group_queue, wait_queue, LEVELS};
use crate::backends::shared;
use crate::broker::{ConsumerInfo, GroupStats};
use crate::error::Result;

impl AmqpBroker {
    pub(super) async fn group_stats(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        // A group's queues are declared together: when its main queue is
        // missing, so are the others, and each passive declare of a missing
        // queue costs a channel (which lapin logs as an error).
        let Some(ready) = self.ready(&group_queue(topic, group)).await? else {
            return Ok(GroupStats {
                topic: topic.to_string(),
                group: group.to_string(),
                ready: 0,
                in_flight: Some(0),
                waiting: 0,
                dead_letters: 0,
                oldest_age: None,
                partitions: Vec::new(),
            });
        };
        let mut waiting = 0;
        for level in LEVELS {
            waiting += self.ready(&wait_queue(topic, group, level)).await?.unwrap_or(0);
        }
        let dead_letters = self.ready(&dlq(topic, group)).await?.unwrap_or(0);
        // Ready, waiting and dead letters come over AMQP; in flight only
        // from the management plugin: without it, unknown rather than 0.
        let in_flight = match self.management.unacked(&self.vhost, &group_queue(topic, group)).await {
            Ok(n) => Some(n),
            Err(e) => {
                if !self.in_flight_unknown_said.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the in-flight count is unknown (inspect gives the other figures)");
                }
                None
            }
        };
        Ok(GroupStats {
            topic: topic.to_string(),
            group: group.to_string(),
            ready,
            in_flight,
            waiting,
            dead_letters,
            oldest_age: None,
            partitions: Vec::new(),
        })
    }

    pub(super) async fn list_consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.check_open()?;
        let found = self.management.consumers(&self.vhost, &group_queue(topic, group)).await?;
        Ok(found
            .into_iter()
            .map(|(tag, unacked)| {
                // Tags are `{consumer name}-{8 hex digits}`.
                let name = match tag.rsplit_once('-') {
                    Some((name, suffix)) if suffix.len() == 8 => name.to_string(),
                    _ => tag,
                };
                let mut c = ConsumerInfo::named(name);
                c.holding = unacked;
                c
            })
            .collect())
    }

    pub(super) async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        self.check_open()?;
        let names = self.management.bound_queues(&self.vhost, topic).await?;
        let prefix = format!("{topic}.");
        let mut groups: Vec<String> =
            names.into_iter().filter_map(|q| q.strip_prefix(&prefix).map(str::to_string)).collect();
        groups.sort();
        Ok(groups)
    }

    /// Messages ready in a queue (`None` if it does not exist).
    async fn ready(&self, queue: &str) -> Result<Option<u64>> {
        let channel = self.fresh_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await;
        let n = declared.ok().map(|q| u64::from(q.message_count()));
        let _ = channel.close(200, "inspected".into()).await;
        Ok(n)
    }
}
