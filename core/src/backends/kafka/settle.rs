//! Settling deliveries: acks (marked on their reader, committed in the
//! background), retries (to the group's retry topic of the level) and
//! dead-lettering, each done once the copy is produced.

use std::sync::Arc;
use std::time::SystemTime;

use super::broker::KafkaBroker;
use super::dead_letters::{DL_OFFSET, DL_PARTITION};
use super::reader::KafkaReceipt;
use super::{level_for, retry_topic, BACKEND};
use crate::broker::Delivery;
use crate::dead_letter::DeadLetterReason;
use crate::error::{Error, Result};
use crate::message::{to_millis, Message};
use crate::wire;

impl KafkaBroker {
    pub(super) fn receipt<'a>(&self, d: &'a Delivery) -> Result<&'a KafkaReceipt> {
        d.receipt_as::<KafkaReceipt>(BACKEND)
    }

    pub(super) async fn ack_batch(&self, deliveries: &[Delivery]) -> Result<()> {
        let receipts = deliveries.iter().map(|d| self.receipt(d)).collect::<Result<Vec<_>>>()?;
        let mut lost = None;
        // A worker's batch comes from one reader: settled under one lock.
        let mut rest: &[&KafkaReceipt] = &receipts;
        let mut offset = 0;
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|r| Arc::ptr_eq(&r.reader, &first.reader)).count();
            if let Some(i) = first.reader.settle_all(&rest[..n]) {
                lost.get_or_insert_with(|| deliveries[offset + i].message.id.clone());
            }
            // Committed in the background, like any Kafka consumer's offsets: a
            // crash before the commit lands redelivers (at-least-once).
            first.reader.commit_soon();
            rest = &rest[n..];
            offset += n;
        }
        match lost {
            Some(message_id) => Err(Error::lease_lost(&message_id)),
            None => Ok(()),
        }
    }

    pub(super) async fn retry_later(&self, delivery: &Delivery, next: Message) -> Result<()> {
        let r = self.receipt(delivery)?;
        if !r.reader.holds(r) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        let remaining = next.deliver_at.map_or(0, |t| to_millis(t).saturating_sub(to_millis(SystemTime::now())));
        let target = retry_topic(&delivery.topic, &delivery.group, level_for(remaining));
        let headers = wire::encode_headers(&next);
        self.outbox.send(&target, next.key.as_deref().map(str::as_bytes), &headers, &next.payload).await?;
        r.reader.settle(r);
        if let Err(e) = r.reader.commit().await {
            tracing::debug!(error = %e, "commit failed; retried with the next one");
        }
        Ok(())
    }

    pub(super) async fn dead_letter_one(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        let r = self.receipt(delivery)?;
        if !r.reader.holds(r) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        let m = &delivery.message;
        let mut headers = wire::encode_headers(m);
        headers.extend(wire::encode_reason(reason));
        headers.push((DL_PARTITION.to_string(), r.partition.to_string()));
        headers.push((DL_OFFSET.to_string(), r.offset.to_string()));
        self.produce_dead_letter(&delivery.topic, &delivery.group, headers, m).await?;
        r.reader.settle(r);
        if let Err(e) = r.reader.commit().await {
            tracing::debug!(error = %e, "commit failed; retried with the next one");
        }
        Ok(())
    }
}
