//! Settling deliveries: acks, lease extensions and retries (each one
//! script call), and trimming what every group has acked. Separate: the
//! acker's path, after the receive, on the receipts it made.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::Value;

use super::broker::{now_ms, RedisBroker};
use super::publish::add_message;
use super::receive::RedisReceipt;
use super::reply::{parse_id, string, xinfo_groups};
use super::{err, scripts, TopicKeys, BACKEND};
use crate::broker::Delivery;
use crate::error::{Error, Result};
use crate::message::{to_millis, Message};

impl RedisBroker {
    /// Acks deliveries, one script call per topic and group (`Broker::ack`).
    pub(super) async fn ack_batch(&self, deliveries: &[Delivery]) -> Result<()> {
        self.check_open()?;
        // One script call per topic and group (a worker's batch has one of each).
        let mut batches: HashMap<(&str, &str), Vec<(&Delivery, &RedisReceipt)>> = HashMap::new();
        for (d, r) in deliveries.iter().zip(self.receipts(deliveries)?) {
            batches.entry((&*d.topic, &*d.group)).or_default().push((d, r));
        }
        let mut lost: Option<Error> = None;
        let mut topics = HashSet::new();
        for ((topic, group), batch) in batches {
            let keys = TopicKeys::new(topic);
            let (due, fresh): (Vec<_>, Vec<_>) = batch.iter().partition(|(_, r)| r.due);
            let mut inv = scripts::ack().key(&keys.stream);
            inv.key(keys.due(group)).arg(group).arg(fresh.len());
            for (_, r) in fresh.iter().chain(&due) {
                inv.arg(&r.id);
            }
            let acked: usize = inv.invoke_async(&mut self.conn()).await.map_err(err)?;
            if acked < batch.len() && lost.is_none() {
                // Which ones were settled already, one XACK for the batch cannot tell.
                lost = Some(match batch.as_slice() {
                    [(d, _)] => Error::lease_lost(&d.message.id),
                    _ => Error::leases_lost(batch.len() - acked),
                });
            }
            topics.insert(topic);
        }
        for topic in topics {
            if let Err(e) = self.trim_consumed(topic, false).await {
                tracing::debug!(error = %e, "trimming consumed entries failed; will try again");
            }
        }
        lost.map_or(Ok(()), Err)
    }

    /// Extends the leases of deliveries (`Broker::extend_leases`).
    pub(super) async fn extend_batch(&self, deliveries: &[Delivery]) -> Result<()> {
        self.check_open()?;
        let mut batches: HashMap<(&str, &str, &str), Vec<&RedisReceipt>> = HashMap::new();
        for (d, r) in deliveries.iter().zip(self.receipts(deliveries)?) {
            batches.entry((&*d.topic, &*d.group, &*r.consumer)).or_default().push(r);
        }
        for ((topic, group, consumer), receipts) in batches {
            let keys = TopicKeys::new(topic);
            let mut inv = scripts::extend().key(&keys.stream);
            inv.key(keys.due(group)).arg(group).arg(consumer);
            for r in &receipts {
                inv.arg(if r.due { "d" } else { "s" }).arg(&r.id);
            }
            inv.invoke_async::<i64>(&mut self.conn()).await.map_err(err)?;
        }
        Ok(())
    }

    /// Parks a delivery to come again as `next` (`Broker::retry`).
    pub(super) async fn retry_later(&self, delivery: &Delivery, next: Message) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<RedisReceipt>(BACKEND)?;
        let keys = TopicKeys::new(&delivery.topic);
        let group = &*delivery.group;
        let source = if r.due { keys.due(group) } else { keys.stream.clone() };
        let due = to_millis(next.due_at());
        let mut inv = scripts::retry().key(&source);
        inv.key(keys.park(group)).key(keys.retry(group)).key(keys.due(group));
        inv.arg(group).arg(&*r.consumer).arg(&r.id).arg(due).arg(now_ms()).arg(if r.due { "1" } else { "0" });
        add_message(&mut inv, &next);
        let done: i64 = inv.invoke_async(&mut self.conn()).await.map_err(err)?;
        if done == 0 {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        Ok(())
    }

    /// Trims entries of the topic stream that every group has acked, at most once a second.
    pub(super) async fn trim_consumed(&self, topic: &str, force: bool) -> Result<()> {
        {
            let mut last = self.last_trim.lock().unwrap();
            let now = Instant::now();
            if !force && last.get(topic).is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1)) {
                return Ok(());
            }
            last.insert(topic.to_string(), now);
        }
        let keys = TopicKeys::new(topic);
        let mut conn = self.conn();
        let groups = xinfo_groups(&mut conn, &keys.stream).await?;
        if groups.is_empty() {
            return Ok(()); // kept for the first group to come
        }
        let mut safe: Option<(u64, u64)> = None;
        for g in &groups {
            let bound = if g.pending > 0 {
                let summary: Value =
                    redis::cmd("XPENDING").arg(&keys.stream).arg(&g.name).query_async(&mut conn).await.map_err(err)?;
                match &summary {
                    Value::Array(parts) if parts.len() >= 2 => string(&parts[1]).and_then(|s| parse_id(&s)),
                    _ => None,
                }
            } else {
                parse_id(&g.last_delivered).map(|(ms, seq)| (ms, seq + 1))
            };
            let Some(bound) = bound else { return Ok(()) };
            safe = Some(safe.map_or(bound, |s| s.min(bound)));
        }
        if let Some((ms, seq)) = safe {
            if (ms, seq) > (0, 1) {
                redis::cmd("XTRIM")
                    .arg(&keys.stream)
                    .arg("MINID")
                    .arg(format!("{ms}-{seq}"))
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    fn receipts<'a>(&self, deliveries: &'a [Delivery]) -> Result<Vec<&'a RedisReceipt>> {
        deliveries.iter().map(|d| d.receipt_as::<RedisReceipt>(BACKEND)).collect()
    }
}
