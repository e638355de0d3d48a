//! A group's dead letters: listed, redriven and purged by reading the dead
//! letter queue on a channel of its own (what is left goes back when it closes).

use std::time::SystemTime;

use bytes::Bytes;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};

use super::broker::AmqpBroker;
use super::err;
use super::reply::read_headers;
use super::topology::{dlq, group_queue};
use crate::dead_letter::{self, DeadLetter};
use crate::error::Result;
use crate::message::Message;
use crate::wire;

/// Longest a scan of dead letters reads (they are read and put back).
const DLQ_SCAN_LIMIT: usize = 10_000;

impl AmqpBroker {
    pub(super) async fn list_dead(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        // Dead letters are listed by reading them and putting them back
        // (the scan's channel closes without acking); the id is the message id.
        let mut seen_after = after.is_none();
        let mut out = Vec::new();
        self.scan_dead_letters(topic, group, |id, message| {
            if !seen_after {
                seen_after = Some(id) == after;
            } else if out.len() < limit {
                out.push(dead_letter::from_stored(
                    id.to_string(),
                    message.clone(),
                    topic,
                    group,
                    SystemTime::UNIX_EPOCH,
                ));
            }
            None
        })
        .await?;
        Ok(out)
    }

    pub(super) async fn redrive_dead(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.check_open()?;
        let queue = group_queue(topic, group);
        self.scan_dead_letters(topic, group, |id, message| {
            ids.iter().any(|i| i == id).then(|| Some((queue.clone(), dead_letter::redriven(message.clone()))))
        })
        .await
    }

    pub(super) async fn purge_dead(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.check_open()?;
        match ids {
            None => {
                let channel = self.fresh_channel().await?;
                // A missing queue has nothing to purge (and closes the channel).
                let n = channel.queue_purge(dlq(topic, group).into(), QueuePurgeOptions::default()).await.unwrap_or(0);
                let _ = channel.close(200, "purged".into()).await;
                Ok(n as usize)
            }
            Some(ids) => {
                self.scan_dead_letters(topic, group, |id, _| ids.iter().any(|i| i == id).then_some(None)).await
            }
        }
    }

    /// Reads the group's dead letters (at most `DLQ_SCAN_LIMIT`) on a channel
    /// of its own, asking `choose` about each: `None` leaves it (it goes back
    /// when the channel closes), `Some(None)` removes it, `Some(Some((queue,
    /// copy)))` publishes `copy` to `queue`, waits for the confirm, then
    /// removes it. Returns how many were removed.
    async fn scan_dead_letters(
        &self,
        topic: &str,
        group: &str,
        mut choose: impl FnMut(&str, &Message) -> Option<Option<(String, Message)>>,
    ) -> Result<usize> {
        let connection_channel = self.fresh_channel().await?;
        let mut taken = 0;
        for _ in 0..DLQ_SCAN_LIMIT {
            let got = match connection_channel.basic_get(dlq(topic, group).into(), BasicGetOptions::default()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => break, // no such queue
            };
            let (headers, _) = read_headers(&got.delivery.properties);
            let message = wire::decode(headers, Bytes::from(got.delivery.data.clone()), 1).message;
            let id = message.id.clone();
            match choose(&id, &message) {
                None => {}
                Some(copy) => {
                    if let Some((queue, copy)) = copy {
                        let headers = wire::encode_headers(&copy);
                        self.publish_confirmed(vec![(
                            String::new(),
                            queue,
                            headers,
                            copy.payload.clone(),
                            copy.content_type.clone(),
                        )])
                        .await?;
                    }
                    connection_channel
                        .basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
                        .await
                        .map_err(err)?;
                    taken += 1;
                }
            }
        }
        let _ = connection_channel.close(200, "scan done".into()).await;
        Ok(taken)
    }
}
