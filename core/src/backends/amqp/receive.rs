//! Receiving: a group's consumer on its own channel (started, restarted
//! with a new prefetch when the worker's window changes), a receive call,
//! and stopping one consumer while handing back what it was pushed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use super::broker::AmqpBroker;
use super::publish::headers_of;
use super::topology::{group_queue, level_for};
use super::{err, BACKEND};
use crate::backends::shared;
use crate::broker::{Delivery, ReceiveRequest};
use crate::error::{Error, Result};
use crate::message::to_millis;

/// A group's consumer on this handle.
pub(super) struct GroupConsumer {
    pub(super) consumer: lapin::Consumer,
    pub(super) tag: String,
    pub(super) link: Arc<ConsumerLink>,
}

/// What every delivery of one consumer channel shares (one `Arc` per
/// message rather than a channel handle and two names).
#[derive(Debug)]
pub(super) struct ConsumerLink {
    pub(super) channel: Channel,
    /// The connection it was opened on: a delivery from an older one
    /// cannot be settled any more.
    pub(super) generation: u64,
    /// Delivery tags handed out and not yet settled, so a batch of acks can
    /// go as one `multiple` ack where that is exact.
    pub(super) unsettled: Mutex<std::collections::BTreeSet<u64>>,
    pub(super) topic: Arc<str>,
    pub(super) group: Arc<str>,
}

impl ConsumerLink {
    /// Whether its deliveries can still be settled: same connection, channel open.
    pub(super) fn live(&self, generation: u64) -> bool {
        self.generation == generation && self.channel.status().connected()
    }
}

/// A group's consumer on this handle, created on first receive.
pub(super) type ConsumerSlot = Arc<tokio::sync::Mutex<Option<GroupConsumer>>>;

/// A consumer's arguments: the delivery timeout that fits the worker.
pub(super) fn consume_args(consumer_timeout_ms: i64) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(consumer_timeout_ms));
    args
}

impl AmqpBroker {
    pub(super) async fn receive_batch(&self, req: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        self.check_open()?;
        shared::check_names(req.topic, req.group)?;
        if req.max == 0 {
            return Ok(Vec::new());
        }
        let slot = self.consumer_for(req.topic, req.group, req.consumer).await;
        let mut guard = slot.lock().await;
        let generation = self.generation.load(Ordering::Acquire);
        // The prefetch is what this consumer may hold unacked: the worker's window.
        let wanted = u16::try_from(req.window.max(req.max)).unwrap_or(u16::MAX);
        // A consumer from an older connection is replaced. A closed channel
        // shows as the end of its stream (below), not by asking its status
        // on every receive: that lock is taken by lapin's reader on every
        // frame, and asking here contended with it.
        let stale = guard.as_ref().is_none_or(|c| c.link.generation != generation);
        if stale {
            // Declared once per consumer (and again after a reconnect), not per receive.
            self.declare_group(req.topic, req.group).await?;
            let channel = self.fresh_channel().await?;
            let (consumer, tag) = self.consume(&channel, req.topic, req.group, req.consumer, wanted).await?;
            let link = Arc::new(ConsumerLink {
                channel,
                generation: self.generation.load(Ordering::Acquire),
                unsettled: Mutex::default(),
                topic: req.topic.into(),
                group: req.group.into(),
            });
            *guard = Some(GroupConsumer { consumer, tag, link });
        }
        // RabbitMQ applies a prefetch only to consumers started after it,
        // so a consumer keeps the window it started with (see
        // `consume`). Changing it takes a cancel, and on RabbitMQ 3.10 a
        // delivery racing the cancel comes back with its delivery count
        // raised: a message would lose an attempt for nothing.
        let state = guard.as_mut().expect("consumer set above");
        let deadline = tokio::time::Instant::now() + req.wait;
        let mut out = Vec::new();
        while out.len() < req.max {
            // Take what is already here (polled once: a timer set to now
            // fires on the next millisecond tick, which held every batch a
            // millisecond); wait, with a timer, only for the first.
            let next = match state.consumer.next().now_or_never() {
                Some(next) => Some(next),
                None if out.is_empty() => tokio::time::timeout_at(deadline, state.consumer.next()).await.ok(),
                None => break,
            };
            let next = match next {
                None => break,
                Some(None) => {
                    *guard = None;
                    return if out.is_empty() {
                        Err(Error::Connect {
                            backend: BACKEND,
                            url: self.url.clone(),
                            reason: "consumer cancelled".into(),
                        })
                    } else {
                        Ok(out)
                    };
                }
                Some(Some(Err(e))) => {
                    *guard = None;
                    return if out.is_empty() { Err(err(e)) } else { Ok(out) };
                }
                Some(Some(Ok(d))) => d,
            };
            let delivery = AmqpBroker::to_delivery(&state.link, next);
            // Not due yet: back to the wait queues (a hop, not an attempt).
            if let Some(due) = delivery.message.deliver_at {
                let remaining = to_millis(due).saturating_sub(to_millis(SystemTime::now()));
                if level_for(remaining).is_some() {
                    let queue = AmqpBroker::route_for_group(req.topic, req.group, to_millis(due));
                    let (headers, payload, ct) = headers_of(&delivery.message);
                    self.publish_confirmed(vec![(String::new(), queue, headers, payload, ct)]).await?;
                    self.settle(&delivery).await?;
                    continue;
                }
                if remaining > 0 {
                    tokio::time::sleep(Duration::from_millis(remaining)).await; // under the shortest level
                }
            }
            out.push(delivery);
        }
        Ok(out)
    }

    pub(super) async fn consumer_for(&self, topic: &str, group: &str, consumer: &str) -> ConsumerSlot {
        let mut consumers = self.consumers.lock().unwrap();
        Arc::clone(consumers.entry((topic.to_string(), group.to_string(), consumer.to_string())).or_default())
    }

    /// Starts a consumer of the group's queue on `channel` with `prefetch`.
    pub(super) async fn consume(
        &self,
        channel: &Channel,
        topic: &str,
        group: &str,
        consumer: &str,
        prefetch: u16,
    ) -> Result<(lapin::Consumer, String)> {
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(err)?;
        let tag = format!("{consumer}-{:08x}", fastrand::u32(..));
        let consumer = channel
            .basic_consume(
                group_queue(topic, group).into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                consume_args(self.consumer_timeout),
            )
            .await
            .map_err(err)?;
        Ok((consumer, tag))
    }

    pub(super) async fn stop_consumer(&self, topic: &str, group: &str, consumer: &str) -> Result<()> {
        let key = (topic.to_string(), group.to_string(), consumer.to_string());
        let slot = self.consumers.lock().unwrap().remove(&key);
        let Some(slot) = slot else { return Ok(()) };
        let Some(mut state) = slot.lock().await.take() else { return Ok(()) };
        if !state.link.channel.status().connected() {
            return Ok(()); // the broker has them back already
        }
        // Take what was pushed and never received, without acking (so the
        // broker pushes nothing more: the prefetch stays full), put copies
        // back in the queue, stop the consumer, then ack the originals.
        // Closing the channel on them instead would give them back as a
        // new attempt.
        let mut pushed = Vec::new();
        while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(50), state.consumer.next()).await {
            pushed.push(AmqpBroker::to_delivery(&state.link, d));
        }
        let copies = pushed
            .iter()
            .map(|d| {
                let (headers, payload, ct) = headers_of(&d.message);
                (String::new(), group_queue(topic, group), headers, payload, ct)
            })
            .collect();
        self.publish_confirmed(copies).await?;
        state.link.channel.basic_cancel(state.tag.as_str().into(), BasicCancelOptions::default()).await.map_err(err)?;
        for d in &pushed {
            self.settle(d).await?;
        }
        let _ = state.link.channel.close(200, "stopped receiving".into()).await;
        Ok(())
    }
}
