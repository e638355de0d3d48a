//! Settling deliveries: acks (one `multiple` ack per channel where that is
//! exact), retries and dead-lettering (publish the copy, wait for its
//! confirm, then ack the original), and the receipt they go by.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lapin::options::BasicAckOptions;

use super::broker::AmqpBroker;
use super::publish::headers_of;
use super::receive::ConsumerLink;
use super::topology::dlq;
use super::BACKEND;
use crate::broker::Delivery;
use crate::dead_letter::DeadLetterReason;
use crate::error::{Error, Result};
use crate::message::{to_millis, Message};
use crate::wire;

#[derive(Debug)]
pub(super) struct AmqpReceipt {
    pub(super) link: Arc<ConsumerLink>,
    pub(super) tag: u64,
    /// Acking a tag twice is a channel error that would close the channel
    /// and give back every other message on it: settle once, here.
    pub(super) settled: AtomicBool,
}

/// One consumer channel's share of a batch of acks.
type ChannelBatch<'a> = (&'a Arc<ConsumerLink>, Vec<(&'a Delivery, &'a AmqpReceipt)>);

impl AmqpBroker {
    pub(super) async fn settle(&self, delivery: &Delivery) -> Result<()> {
        let r = delivery.receipt_as::<AmqpReceipt>(BACKEND)?;
        // A closed channel means the broker has put the message back.
        if !r.link.live(self.generation.load(Ordering::Acquire)) || r.settled.swap(true, Ordering::AcqRel) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        r.link.unsettled.lock().unwrap().remove(&r.tag);
        r.link
            .channel
            .basic_ack(r.tag, BasicAckOptions::default())
            .await
            .map_err(|_| Error::lease_lost(&delivery.message.id))
    }

    pub(super) async fn ack_batch(&self, deliveries: &[Delivery]) -> Result<()> {
        self.check_open()?;
        // What the broker took back: how many, and the first one's id.
        let (mut lost, mut first_lost) = (0usize, None);
        let current = self.generation.load(Ordering::Acquire);
        // Per consumer channel: the tags of this batch below every tag still
        // unsettled on it go as one `multiple` ack; the others one by one.
        let mut by_channel: Vec<ChannelBatch<'_>> = Vec::new();
        for d in deliveries {
            let r = d.receipt_as::<AmqpReceipt>(BACKEND)?;
            match by_channel.iter_mut().find(|(link, _)| Arc::ptr_eq(link, &r.link)) {
                Some((_, batch)) => batch.push((d, r)),
                None => by_channel.push((&r.link, vec![(d, r)])),
            }
        }
        for (link, batch) in by_channel {
            // A closed channel (or connection) has given these back already.
            let live = link.live(current);
            let mut tags = Vec::with_capacity(batch.len());
            for (d, r) in batch {
                if !live || r.settled.swap(true, Ordering::AcqRel) {
                    lost += 1;
                    first_lost.get_or_insert(d.message.id.as_str());
                } else {
                    tags.push(r.tag);
                }
            }
            if tags.is_empty() {
                continue;
            }
            tags.sort_unstable();
            let floor = {
                let mut unsettled = link.unsettled.lock().unwrap();
                for t in &tags {
                    unsettled.remove(t);
                }
                unsettled.first().copied().unwrap_or(u64::MAX)
            };
            let split = tags.partition_point(|t| *t < floor);
            let mut acks = Vec::new();
            if split > 0 {
                acks.push((tags[split - 1], true));
            }
            acks.extend(tags[split..].iter().map(|t| (*t, false)));
            for (tag, multiple) in acks {
                if let Err(e) = link.channel.basic_ack(tag, BasicAckOptions { multiple }).await {
                    // The channel closed: the broker gives these back to the queue.
                    tracing::debug!(error = %e, "an ack did not reach RabbitMQ");
                    lost += tags.len();
                    break;
                }
            }
        }
        match (lost, first_lost) {
            (0, _) => Ok(()),
            (1, Some(id)) => Err(Error::lease_lost(id)),
            (count, _) => Err(Error::leases_lost(count)),
        }
    }

    pub(super) async fn retry_later(&self, delivery: &Delivery, next: Message) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<AmqpReceipt>(BACKEND)?;
        if !r.link.live(self.generation.load(Ordering::Acquire)) || r.settled.load(Ordering::Acquire) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        let queue = AmqpBroker::route_for_group(&delivery.topic, &delivery.group, to_millis(next.due_at()));
        let (headers, payload, ct) = headers_of(&next);
        self.publish_confirmed(vec![(String::new(), queue, headers, payload, ct)]).await?;
        self.settle(delivery).await
    }

    pub(super) async fn dead_letter_one(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<AmqpReceipt>(BACKEND)?;
        if !r.link.live(self.generation.load(Ordering::Acquire)) || r.settled.load(Ordering::Acquire) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        let (mut headers, payload, ct) = headers_of(&delivery.message);
        headers.extend(wire::encode_reason(reason));
        self.publish_confirmed(vec![(String::new(), dlq(&delivery.topic, &delivery.group), headers, payload, ct)])
            .await?;
        self.settle(delivery).await
    }
}
