//! The embedded `Broker`: memory:// and sqlite://PATH on one SQL engine.
//!
//! Every primitive is one SQLite transaction, so each is atomic, and
//! `BEGIN IMMEDIATE` serialises writers across processes sharing a file.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::db::Db;
use super::idempotency::SqliteIdempotencyStore;
use crate::backends::shared;
use crate::broker::{
    validate_batch, validate_raw, Broker, Capabilities, ConsumerInfo, Delivery, GroupStats, Receipt, ReceiveRequest,
};
use crate::dead_letter::{self, DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::idempotency::IdempotencyStore;
use crate::message::{from_millis, to_millis, validate_name, Message};
use crate::schedule::ScheduleStore;
use crate::url::BrokerUrl;
use crate::wire;

/// How many log rows a group copies per receive, at most.
const MATERIALIZE_CHUNK: i64 = 5000;

/// The embedded broker handle.
#[derive(Debug)]
pub struct EmbeddedBroker {
    db: Arc<Db>,
    closed: AtomicBool,
}

/// An entry as read for delivery: id, lease token, headers, payload,
/// deliveries so far (this one included), publish time.
type Row = (i64, i64, String, Vec<u8>, u32, i64);

/// Which row a delivery holds, and with which lease.
#[derive(Debug)]
struct EmbeddedReceipt {
    entry: i64,
    lease: i64,
}

impl EmbeddedBroker {
    /// Opens `memory://[NAME]` or `sqlite://PATH`.
    pub async fn connect(url: &BrokerUrl) -> Result<Self> {
        let db = Db::open(url).await?;
        Ok(EmbeddedBroker { db, closed: AtomicBool::new(false) })
    }

    fn check_open(&self) -> Result<()> {
        shared::check_open(&self.closed)
    }

    fn receipts<'a>(&self, deliveries: &'a [Delivery]) -> Result<Vec<(i64, i64, &'a str)>> {
        deliveries
            .iter()
            .map(|d| {
                let r = d.receipt_as::<EmbeddedReceipt>(self.db.backend)?;
                Ok((r.entry, r.lease, d.message.id.as_str()))
            })
            .collect()
    }

    /// One attempt at receiving: copy new log rows into the group, then
    /// lease the due entries. Returns the deliveries and, when there are
    /// none, the next time something becomes due.
    fn try_receive(
        conn: &mut Connection,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        lease: Duration,
    ) -> rusqlite::Result<(Vec<Row>, Option<i64>)> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = to_millis(SystemTime::now()) as i64;
        ensure_group(&tx, topic, group, now)?;
        materialize(&tx, topic, group)?;
        let token = fastrand::i64(1..i64::MAX);
        let lease_until = now + lease.as_millis() as i64;
        let mut rows = Vec::with_capacity(max);
        {
            let mut select = tx.prepare_cached(
                "SELECT id, headers, payload, deliveries, published_at FROM pb_entries
                 WHERE topic = ?1 AND grp = ?2 AND due_at <= ?3 ORDER BY due_at, id LIMIT ?4",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE pb_entries SET lease = ?1, due_at = ?2, deliveries = deliveries + 1, consumer = ?4, leased_at = ?5
                 WHERE id = ?3",
            )?;
            let found = select.query_map(params![topic, group, now, max as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            for row in found {
                let (id, headers, payload, deliveries, published_at) = row?;
                rows.push((id, token, headers, payload, deliveries + 1, published_at));
            }
            for (id, ..) in &rows {
                update.execute(params![token, lease_until, id, consumer, now])?;
            }
        }
        let next_due = if rows.is_empty() {
            tx.query_row(
                "SELECT MIN(due_at) FROM pb_entries WHERE topic = ?1 AND grp = ?2",
                params![topic, group],
                |r| r.get::<_, Option<i64>>(0),
            )?
        } else {
            None
        };
        tx.commit()?;
        Ok((rows, next_due))
    }
}

fn ensure_group(conn: &Connection, topic: &str, group: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO pb_groups (topic, grp, cursor, created_at) VALUES (?1, ?2, 0, ?3)")?
        .execute(params![topic, group, now])?;
    Ok(())
}

/// Copies log rows the group has not seen yet into its entries, then drops
/// log rows every group of the topic has copied.
fn materialize(conn: &Connection, topic: &str, group: &str) -> rusqlite::Result<()> {
    let cursor: i64 = conn
        .prepare_cached("SELECT cursor FROM pb_groups WHERE topic = ?1 AND grp = ?2")?
        .query_row(params![topic, group], |r| r.get(0))?;
    let upto: Option<i64> = conn
        .prepare_cached(
            "SELECT MAX(seq) FROM (SELECT seq FROM pb_log WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3)",
        )?
        .query_row(params![topic, cursor, MATERIALIZE_CHUNK], |r| r.get(0))?;
    let Some(upto) = upto else { return Ok(()) };
    conn.prepare_cached(
        "INSERT INTO pb_entries (topic, grp, headers, payload, published_at, due_at)
         SELECT topic, ?2, headers, payload, published_at, due_at FROM pb_log
         WHERE topic = ?1 AND seq > ?3 AND seq <= ?4 ORDER BY seq",
    )?
    .execute(params![topic, group, cursor, upto])?;
    conn.prepare_cached("UPDATE pb_groups SET cursor = ?3 WHERE topic = ?1 AND grp = ?2")?
        .execute(params![topic, group, upto])?;
    conn.prepare_cached(
        "DELETE FROM pb_log WHERE topic = ?1 AND seq <= (SELECT MIN(cursor) FROM pb_groups WHERE topic = ?1)",
    )?
    .execute(params![topic])?;
    Ok(())
}

fn headers_json(pairs: Vec<(String, String)>) -> String {
    let map: BTreeMap<String, String> = pairs.into_iter().collect();
    serde_json::to_string(&map).expect("string map always serialises")
}

/// Reads a headers column. A row whose JSON is not an object of strings
/// (written by hand, say) is reported as malformed rather than failing.
fn parse_headers(json: &str) -> (Vec<(String, String)>, Option<String>) {
    match serde_json::from_str::<BTreeMap<String, String>>(json) {
        Ok(map) => (map.into_iter().collect(), None),
        Err(e) => (Vec::new(), Some(format!("headers are not a JSON object of strings: {e}"))),
    }
}

/// Decodes a stored row. `published_at` (the row's own time) stands in when
/// a foreign producer sent no publish time.
fn decode_row(headers: &str, payload: Vec<u8>, deliveries: u32, published_at: i64) -> wire::Decoded {
    let (pairs, bad_json) = parse_headers(headers);
    let mut decoded = wire::decode(pairs, Bytes::from(payload), deliveries);
    shared::fill_published_at(&mut decoded.message, || Some(crate::message::from_millis(published_at.max(0) as u64)));
    if bad_json.is_some() {
        decoded.malformed = bad_json;
    }
    decoded
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn backend(&self) -> &'static str {
        self.db.backend
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_bytes: self.db.options.max_message_bytes,
            delayed_delivery: true,
            ordered_delivery: true,
            replay_for_new_groups: true,
            leases: true,
            pushes_ahead: false,
            owned_partitions: false,
            oldest_age: true,
            stats_delay: Duration::ZERO,
        }
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        let (t, g) = (topic.to_string(), group.to_string());
        let err = self.db.err();
        self.db.call(move |c| ensure_group(c, &t, &g, to_millis(SystemTime::now()) as i64).map_err(err)).await
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_open()?;
        validate_batch(topic, &messages, &self.capabilities())?;
        if messages.is_empty() {
            return Ok(());
        }
        let woken = topic.to_string();
        let topic = topic.to_string();
        let err = self.db.err();
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                {
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT INTO pb_log (topic, headers, payload, published_at, due_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .map_err(err)?;
                    for m in &messages {
                        let headers = headers_json(wire::encode_headers(m));
                        insert
                            .execute(params![
                                topic,
                                headers,
                                &m.payload[..],
                                to_millis(m.published_at) as i64,
                                to_millis(m.due_at()) as i64
                            ])
                            .map_err(err)?;
                    }
                }
                tx.commit().map_err(err)
            })
            .await?;
        self.db.work_ready(Some(&woken));
        Ok(())
    }

    async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.check_open()?;
        validate_raw(topic, &headers, &payload, self.db.options.max_message_bytes)?;
        let woken = topic.to_string();
        let topic = topic.to_string();
        let headers = headers_json(headers);
        let err = self.db.err();
        self.db
            .call(move |c| {
                let now = to_millis(SystemTime::now()) as i64;
                c.prepare_cached(
                    "INSERT INTO pb_log (topic, headers, payload, published_at, due_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                )
                .map_err(err)?
                .execute(params![topic, headers, &payload[..], now])
                .map_err(err)?;
                Ok(())
            })
            .await?;
        self.db.work_ready(Some(&woken));
        Ok(())
    }

    async fn receive(&self, request: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        self.check_open()?;
        shared::check_names(request.topic, request.group)?;
        if request.max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + request.wait;
        let err = self.db.err();
        let _listening = if request.wait.is_zero() { None } else { self.db.listen_to_other_processes(request.topic) };
        loop {
            // Listen before looking, so a publish between the look and the
            // wait is not missed.
            let notified = self.db.activity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let (t, g, max, lease) = (request.topic.to_string(), request.group.to_string(), request.max, request.lease);
            let consumer = request.consumer.to_string();
            let (rows, next_due) = self
                .db
                .call(move |c| EmbeddedBroker::try_receive(c, &t, &g, &consumer, max, lease).map_err(err))
                .await?;
            if !rows.is_empty() {
                return Ok(rows
                    .into_iter()
                    .map(|(entry, lease, headers, payload, deliveries, published_at)| {
                        let decoded = decode_row(&headers, payload, deliveries, published_at);
                        Delivery::new(
                            request.topic,
                            request.group,
                            decoded.message,
                            decoded.malformed,
                            Receipt::new(EmbeddedReceipt { entry, lease }),
                        )
                    })
                    .collect());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut nap = (deadline - now).min(self.db.options.poll_interval);
            if let Some(due) = next_due {
                let until_due = Duration::from_millis((due - to_millis(SystemTime::now()) as i64).max(1) as u64);
                nap = nap.min(until_due);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
            self.check_open()?;
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.check_open()?;
        let receipts: Vec<(i64, i64, String)> =
            self.receipts(deliveries)?.into_iter().map(|(e, l, id)| (e, l, id.to_string())).collect();
        if receipts.is_empty() {
            return Ok(());
        }
        let err = self.db.err();
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let mut lost = None;
                {
                    let mut delete =
                        tx.prepare_cached("DELETE FROM pb_entries WHERE id = ?1 AND lease = ?2").map_err(err)?;
                    for (entry, lease, id) in &receipts {
                        if delete.execute(params![entry, lease]).map_err(err)? == 0 && lost.is_none() {
                            lost = Some(id.clone());
                        }
                    }
                }
                tx.commit().map_err(err)?;
                match lost {
                    Some(message_id) => Err(Error::lease_lost(&message_id)),
                    None => Ok(()),
                }
            })
            .await
    }

    async fn extend_leases(&self, deliveries: &[Delivery], lease: Duration) -> Result<()> {
        self.check_open()?;
        let receipts: Vec<(i64, i64)> = self.receipts(deliveries)?.into_iter().map(|(e, l, _)| (e, l)).collect();
        if receipts.is_empty() {
            return Ok(());
        }
        let err = self.db.err();
        self.db
            .call(move |c| {
                let until = to_millis(SystemTime::now()) as i64 + lease.as_millis() as i64;
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                {
                    let mut update = tx
                        .prepare_cached("UPDATE pb_entries SET due_at = ?1 WHERE id = ?2 AND lease = ?3")
                        .map_err(err)?;
                    for (entry, token) in &receipts {
                        update.execute(params![until, entry, token]).map_err(err)?;
                    }
                }
                tx.commit().map_err(err)
            })
            .await
    }

    async fn release(&self, deliveries: &[Delivery]) -> Result<()> {
        self.check_open()?;
        let receipts: Vec<(i64, i64)> = self.receipts(deliveries)?.into_iter().map(|(e, l, _)| (e, l)).collect();
        if receipts.is_empty() {
            return Ok(());
        }
        let err = self.db.err();
        self.db
            .call(move |c| {
                let now = to_millis(SystemTime::now()) as i64;
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                {
                    // Handing back does not count as an attempt.
                    let mut update = tx
                        .prepare_cached(
                            "UPDATE pb_entries SET lease = NULL, due_at = ?1, deliveries = MAX(deliveries - 1, 0)
                             WHERE id = ?2 AND lease = ?3",
                        )
                        .map_err(err)?;
                    for (entry, token) in &receipts {
                        update.execute(params![now, entry, token]).map_err(err)?;
                    }
                }
                tx.commit().map_err(err)
            })
            .await?;
        self.db.work_ready(None);
        Ok(())
    }

    async fn retry(&self, delivery: &Delivery, next: Message) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<EmbeddedReceipt>(self.db.backend)?;
        let (entry, token) = (r.entry, r.lease);
        let headers = headers_json(wire::encode_headers(&next));
        let due = to_millis(next.due_at()) as i64;
        let id = delivery.message.id.clone();
        let err = self.db.err();
        self.db
            .call(move |c| {
                let changed = c
                    .prepare_cached(
                        "UPDATE pb_entries SET headers = ?1, due_at = ?2, lease = NULL, deliveries = 0 WHERE id = ?3 AND lease = ?4",
                    )
                    .map_err(err)?
                    .execute(params![headers, due, entry, token])
                    .map_err(err)?;
                if changed == 0 {
                    return Err(Error::lease_lost(&id));
                }
                Ok(())
            })
            .await?;
        self.db.work_ready(Some(&delivery.topic));
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<EmbeddedReceipt>(self.db.backend)?;
        let (entry, token) = (r.entry, r.lease);
        let mut pairs = wire::encode_headers(&delivery.message);
        pairs.extend(wire::encode_reason(reason));
        let headers = headers_json(pairs);
        let dead_at = to_millis(reason.last_failed_at) as i64;
        let id = delivery.message.id.clone();
        let err = self.db.err();
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let moved = tx
                    .prepare_cached(
                        "INSERT INTO pb_dead (topic, grp, headers, payload, published_at, dead_at)
                         SELECT topic, grp, ?1, payload, published_at, ?2 FROM pb_entries WHERE id = ?3 AND lease = ?4",
                    )
                    .map_err(err)?
                    .execute(params![headers, dead_at, entry, token])
                    .map_err(err)?;
                if moved == 0 {
                    return Err(Error::lease_lost(&id));
                }
                tx.prepare_cached("DELETE FROM pb_entries WHERE id = ?1")
                    .map_err(err)?
                    .execute(params![entry])
                    .map_err(err)?;
                tx.commit().map_err(err)
            })
            .await
    }

    async fn inspect(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        let (t, g) = (topic.to_string(), group.to_string());
        let err = self.db.err();
        self.db
            .call(move |c| {
                let now = to_millis(SystemTime::now()) as i64;
                let tx = c.transaction().map_err(err)?;
                let cursor: i64 = tx
                    .query_row("SELECT cursor FROM pb_groups WHERE topic = ?1 AND grp = ?2", params![t, g], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(err)?
                    .unwrap_or(0);
                // Entries the group holds, plus log rows it has not copied yet.
                let (ready, in_flight, waiting, oldest_entry): (i64, i64, i64, Option<i64>) = tx
                    .query_row(
                        "SELECT
                            COALESCE(SUM(due_at <= ?3), 0),
                            COALESCE(SUM(lease IS NOT NULL AND due_at > ?3), 0),
                            COALESCE(SUM(lease IS NULL AND due_at > ?3), 0),
                            MIN(published_at)
                         FROM pb_entries WHERE topic = ?1 AND grp = ?2",
                        params![t, g, now],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .map_err(err)?;
                let (log_ready, log_waiting, oldest_log): (i64, i64, Option<i64>) = tx
                    .query_row(
                        "SELECT COALESCE(SUM(due_at <= ?3), 0), COALESCE(SUM(due_at > ?3), 0), MIN(published_at)
                         FROM pb_log WHERE topic = ?1 AND seq > ?2",
                        params![t, cursor, now],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .map_err(err)?;
                let dead: i64 = tx
                    .query_row("SELECT COUNT(*) FROM pb_dead WHERE topic = ?1 AND grp = ?2", params![t, g], |r| {
                        r.get(0)
                    })
                    .map_err(err)?;
                let oldest = [oldest_entry, oldest_log].into_iter().flatten().min();
                Ok(GroupStats {
                    topic: t,
                    group: g,
                    ready: (ready + log_ready) as u64,
                    in_flight: Some(in_flight as u64),
                    waiting: (waiting + log_waiting) as u64,
                    dead_letters: dead as u64,
                    oldest_age: oldest.map(|ms| Duration::from_millis((now - ms).max(0) as u64)),
                    partitions: Vec::new(),
                })
            })
            .await
    }

    /// The consumers holding messages now (an idle one leaves no trace in the file).
    async fn consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        let (t, g) = (topic.to_string(), group.to_string());
        let now = to_millis(SystemTime::now()) as i64;
        let err = self.db.err();
        self.db
            .call(move |c| {
                let mut held = c
                    .prepare_cached(
                        "SELECT consumer, COUNT(*), MIN(leased_at) FROM pb_entries
                         WHERE topic = ?1 AND grp = ?2 AND lease IS NOT NULL AND due_at > ?3 AND consumer IS NOT NULL
                         GROUP BY consumer ORDER BY consumer",
                    )
                    .map_err(err)?;
                let rows = held
                    .query_map(params![t, g, now], |r| {
                        let mut info = ConsumerInfo::named(r.get::<_, String>(0)?);
                        info.holding = Some(r.get::<_, i64>(1)?.max(0) as u64);
                        info.holding_since = r.get::<_, Option<i64>>(2)?.map(|ms| from_millis(ms.max(0) as u64));
                        Ok(info)
                    })
                    .map_err(err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
            })
            .await
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.check_open()?;
        validate_name("topic", topic)?;
        let t = topic.to_string();
        let err = self.db.err();
        self.db
            .call(move |c| {
                let mut stmt =
                    c.prepare_cached("SELECT grp FROM pb_groups WHERE topic = ?1 ORDER BY grp").map_err(err)?;
                let rows = stmt.query_map(params![t], |r| r.get::<_, String>(0)).map_err(err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
            })
            .await
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        let after: i64 = match after {
            None => 0,
            Some(a) => a.parse().map_err(|_| Error::invalid_option("after", format!("not a dead-letter id: `{a}`")))?,
        };
        let (t, g) = (topic.to_string(), group.to_string());
        let err = self.db.err();
        let rows = self
            .db
            .call(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT id, headers, payload, published_at FROM pb_dead
                         WHERE topic = ?1 AND grp = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                    )
                    .map_err(err)?;
                let rows = stmt
                    .query_map(params![t, g, after, limit as i64], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, i64>(3)?))
                    })
                    .map_err(err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, headers, payload, published_at)| {
                let message = decode_row(&headers, payload, 1, published_at).message;
                dead_letter::from_stored(id.to_string(), message, topic, group, SystemTime::UNIX_EPOCH)
            })
            .collect())
    }

    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        let ids: Vec<i64> = ids
            .iter()
            .map(|s| s.parse().map_err(|_| Error::invalid_option("ids", format!("not a dead-letter id: `{s}`"))))
            .collect::<Result<_>>()?;
        let (t, g) = (topic.to_string(), group.to_string());
        let err = self.db.err();
        let moved = self
            .db
            .call(move |c| {
                let now = to_millis(SystemTime::now()) as i64;
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let mut moved = 0;
                {
                    let mut select = tx
                        .prepare_cached(
                            "SELECT headers, published_at FROM pb_dead WHERE id = ?1 AND topic = ?2 AND grp = ?3",
                        )
                        .map_err(err)?;
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT INTO pb_entries (topic, grp, headers, payload, published_at, due_at)
                             SELECT topic, grp, ?2, payload, published_at, ?3 FROM pb_dead WHERE id = ?1",
                        )
                        .map_err(err)?;
                    let mut delete = tx.prepare_cached("DELETE FROM pb_dead WHERE id = ?1").map_err(err)?;
                    for id in ids {
                        let Some((headers, published_at)) = select
                            .query_row(params![id, t, g], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                            .optional()
                            .map_err(err)?
                        else {
                            continue;
                        };
                        let message = dead_letter::redriven(decode_row(&headers, Vec::new(), 1, published_at).message);
                        insert.execute(params![id, headers_json(wire::encode_headers(&message)), now]).map_err(err)?;
                        delete.execute(params![id]).map_err(err)?;
                        moved += 1;
                    }
                }
                tx.commit().map_err(err)?;
                Ok(moved)
            })
            .await?;
        self.db.work_ready(Some(topic));
        Ok(moved)
    }

    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        let ids: Option<Vec<i64>> = ids
            .map(|ids| {
                ids.iter()
                    .map(|s| {
                        s.parse().map_err(|_| Error::invalid_option("ids", format!("not a dead-letter id: `{s}`")))
                    })
                    .collect::<Result<Vec<i64>>>()
            })
            .transpose()?;
        let (t, g) = (topic.to_string(), group.to_string());
        let err = self.db.err();
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let n = match ids {
                    None => {
                        tx.execute("DELETE FROM pb_dead WHERE topic = ?1 AND grp = ?2", params![t, g]).map_err(err)?
                    }
                    Some(ids) => {
                        let mut delete = tx
                            .prepare_cached("DELETE FROM pb_dead WHERE id = ?1 AND topic = ?2 AND grp = ?3")
                            .map_err(err)?;
                        let mut n = 0;
                        for id in ids {
                            n += delete.execute(params![id, t, g]).map_err(err)?;
                        }
                        n
                    }
                };
                tx.commit().map_err(err)?;
                Ok(n)
            })
            .await
    }

    fn idempotency_store(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(SqliteIdempotencyStore::from_db(Arc::clone(&self.db))))
    }

    fn schedule_store(&self) -> Option<Arc<dyn ScheduleStore>> {
        Some(Arc::new(super::SqliteScheduleStore::from_db(Arc::clone(&self.db))))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        // Only this handle's receives need to see it.
        self.db.activity.notify_waiters();
        Ok(())
    }
}
