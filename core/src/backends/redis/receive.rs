//! Receiving: running the mover that brings due retries and delayed
//! publishes into the streams, claiming entries whose lease expired, and
//! reading new entries from the group's due stream and the topic stream,
//! blocking on the latter. Separate: the consumer's read path, with its own
//! pacing state (`GroupState`) and receipts (`RedisReceipt`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use super::broker::{now_ms, RedisBroker};
use super::reply::{id_time, into_entries, parse_read_reply, pending_count, split_fields};
use super::{err, scripts, TopicKeys};
use crate::backends::shared;
use crate::broker::{Delivery, Receipt, ReceiveRequest};
use crate::error::Result;
use crate::wire;

/// Entries moved per mover run.
const MOVE_LIMIT: u32 = 1000;

/// How often a busy consumer runs the mover and looks at its due stream
/// (an idle one does it on every wake-up). Bounds how late a due retry,
/// or a message handed back by another process, can be picked up.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Longest block on the topic stream while the due stream goes unwatched.
const MAX_BLIND_BLOCK: Duration = Duration::from_millis(250);

/// What one handle knows of a group's waiting messages.
#[derive(Debug)]
pub(super) struct GroupState {
    last_move: Option<Instant>,
    /// Next due time (ms) of a waiting retry or delayed publish; -1: none.
    next_due: i64,
    last_due_read: Option<Instant>,
    /// The last due-stream read was full: read it again next time.
    due_hot: bool,
}

impl Default for GroupState {
    fn default() -> Self {
        GroupState { last_move: None, next_due: -1, last_due_read: None, due_hot: false }
    }
}

/// Which entry a delivery holds.
#[derive(Debug)]
pub(super) struct RedisReceipt {
    /// From the group's due stream (else the topic stream).
    pub(super) due: bool,
    pub(super) id: String,
    pub(super) consumer: Arc<str>,
}

/// A read's topic, group and consumer names, shared by the deliveries it
/// makes rather than copied into each.
struct Names {
    topic: Arc<str>,
    group: Arc<str>,
    consumer: Arc<str>,
}

impl Names {
    fn of(req: &ReceiveRequest<'_>) -> Names {
        Names { topic: req.topic.into(), group: req.group.into(), consumer: req.consumer.into() }
    }
}

impl RedisBroker {
    /// Receives up to `req.max` deliveries (`Broker::receive`).
    pub(super) async fn receive_batch(&self, req: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        self.check_open()?;
        shared::check_names(req.topic, req.group)?;
        if req.max == 0 {
            return Ok(Vec::new());
        }
        let keys = TopicKeys::new(req.topic);
        let deadline = Instant::now() + req.wait;
        // Set after a blocking read that found nothing: an idle consumer
        // looks at its due stream on every wake-up, a busy one every
        // CHECK_EVERY (not on every receive: that doubled the reads).
        let mut woke_idle = false;
        loop {
            self.group_ready(&keys, req.topic, req.group).await?;
            let group_key = (req.topic.to_string(), req.group.to_string());
            let (move_now, mut read_due, mut next_due) = {
                let mut states = self.group_state.lock().unwrap();
                let st = states.entry(group_key.clone()).or_default();
                let due_passed = st.next_due >= 0 && st.next_due as u64 <= now_ms();
                (
                    due_passed || st.last_move.is_none_or(|t| t.elapsed() >= CHECK_EVERY),
                    st.due_hot || st.last_due_read.is_none_or(|t| t.elapsed() >= CHECK_EVERY),
                    st.next_due,
                )
            };
            if move_now {
                let (moved, next): (i64, i64) = scripts::mover()
                    .key(&keys.delay)
                    .key(&keys.delay_data)
                    .key(&keys.stream)
                    .key(keys.retry(req.group))
                    .key(keys.park(req.group))
                    .key(keys.due(req.group))
                    .arg(now_ms())
                    .arg(MOVE_LIMIT)
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(err)?;
                let mut states = self.group_state.lock().unwrap();
                let st = states.entry(group_key).or_default();
                st.last_move = Some(Instant::now());
                st.next_due = next;
                next_due = next;
                read_due |= moved > 0;
            }
            let mut out = self.claim_expired(&keys, &req).await?;
            if out.len() < req.max {
                let now = Instant::now();
                let mut block = None;
                if out.is_empty() && now < deadline {
                    let mut b = (deadline - now).min(MAX_BLIND_BLOCK);
                    if next_due >= 0 {
                        b = b.min(Duration::from_millis((next_due as u64).saturating_sub(now_ms()).max(1)));
                    }
                    // Wake up to claim expired leases of dead consumers, too.
                    b = b.min((req.lease / 2).max(Duration::from_millis(50)));
                    block = Some(b);
                }
                read_due |= woke_idle;
                let max = req.max - out.len();
                out.extend(self.read_new(&keys, &req, max, block, read_due).await?);
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            woke_idle = true;
            self.check_open()?;
        }
    }

    /// Claims entries of this group whose lease (idle time) expired.
    async fn claim_expired(&self, keys: &TopicKeys, req: &ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        let key = (req.topic.to_string(), req.group.to_string());
        {
            let mut last = self.last_claim.lock().unwrap();
            let now = Instant::now();
            // Scanning the pending list is not free: a few times per lease is enough.
            let every = (req.lease / 4).max(Duration::from_millis(25));
            if last.get(&key).is_some_and(|t| now.duration_since(*t) < every) {
                return Ok(Vec::new());
            }
            last.insert(key, now);
        }
        let mut conn = self.conn();
        let mut out = Vec::new();
        for (stream, due) in [(keys.stream.clone(), false), (keys.due(req.group), true)] {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(req.group)
                .arg(req.consumer)
                .arg(req.lease.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(req.max - out.len())
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            let entries = match reply {
                Value::Array(mut parts) if parts.len() >= 2 => into_entries(parts.swap_remove(1)),
                _ => Vec::new(),
            };
            if entries.is_empty() {
                continue;
            }
            // The claim raised each delivery count; read them back.
            let mut pipe = redis::pipe();
            for (id, _) in &entries {
                pipe.cmd("XPENDING").arg(&stream).arg(req.group).arg(id).arg(id).arg(1);
            }
            let pending: Vec<Value> = pipe.query_async(&mut conn).await.map_err(err)?;
            let names = Names::of(req);
            for ((id, fields), p) in entries.into_iter().zip(pending) {
                let Some(fields) = fields else { continue };
                let count = pending_count(&p).unwrap_or(2);
                out.push(self.delivery(&names, due, id, fields, count));
            }
            if out.len() >= req.max {
                break;
            }
        }
        Ok(out)
    }

    fn delivery(&self, names: &Names, due: bool, id: String, fields: Vec<(String, Vec<u8>)>, count: u32) -> Delivery {
        let (headers, payload) = split_fields(fields);
        let mut decoded = wire::decode(headers, payload, count);
        shared::fill_published_at(&mut decoded.message, || Some(id_time(&id)));
        Delivery::new(
            Arc::clone(&names.topic),
            Arc::clone(&names.group),
            decoded.message,
            decoded.malformed,
            Receipt::new(RedisReceipt { due, id, consumer: Arc::clone(&names.consumer) }),
        )
    }

    /// Reads entries never delivered to the group: first the group's due
    /// stream (retries and redriven messages) when `read_due`, then the
    /// topic stream, blocking on the latter only. Never more than `max`.
    async fn read_new(
        &self,
        keys: &TopicKeys,
        req: &ReceiveRequest<'_>,
        max: usize,
        block: Option<Duration>,
        read_due: bool,
    ) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        if read_due {
            out = self.read_stream(req, &keys.due(req.group), true, max, None).await?;
            let mut states = self.group_state.lock().unwrap();
            let state = states.entry((req.topic.to_string(), req.group.to_string())).or_default();
            state.last_due_read = Some(Instant::now());
            state.due_hot = out.len() == max;
        }
        if out.len() < max {
            let block = if out.is_empty() { block } else { None };
            out.extend(self.read_stream(req, &keys.stream, false, max - out.len(), block).await?);
        }
        Ok(out)
    }

    async fn read_stream(
        &self,
        req: &ReceiveRequest<'_>,
        stream: &str,
        due: bool,
        max: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(req.group).arg(req.consumer).arg("COUNT").arg(max);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(stream).arg(">");
        let reply: Value = if block.is_some() {
            let mut conn = self.blocking_conn().await?;
            let reply = cmd.query_async(&mut conn).await;
            match &reply {
                Ok(_) => self.blocking.lock().unwrap().push(conn),
                // The server stopped being the primary while this read
                // waited (a failover): nothing was read, and the next read
                // finds the new primary. Not an error to back off from.
                Err(e) if e.code() == Some("UNBLOCKED") => return Ok(Vec::new()),
                Err(_) => {}
            }
            reply
        } else {
            cmd.query_async(&mut self.conn()).await
        }
        .map_err(|e| {
            if e.code() == Some("NOGROUP") {
                self.groups_ready.lock().unwrap().remove(&(req.topic.to_string(), req.group.to_string()));
            }
            err(e)
        })?;
        let mut out = Vec::new();
        let names = Names::of(req);
        for (_, entries) in parse_read_reply(reply) {
            for (id, fields) in entries {
                if let Some(fields) = fields {
                    out.push(self.delivery(&names, due, id, fields, 1));
                }
            }
        }
        Ok(out)
    }
}
