//! The Kafka schedule store, with nothing but the brokers: the compacted,
//! one-partition topic `pb.schedules`, whose records are the store's
//! operations. The schedules are what those operations make when applied
//! in the partition's order (see [`ScheduleTable`]), so every process that
//! reads the topic agrees on them, and the log decides every race: of 50
//! processes upserting one schedule, the first record in the log created
//! it and the others changed nothing; of two schedulers claiming one, the
//! first record holds it. A call writes its records, waits until Kafka has
//! them, reads the topic up to them, and answers from what they did.
//!
//! Records are keyed `KIND/NAME`: `def` (the definition; a tombstone
//! removes the schedule), `paused`, `tick` (the last tick published) and
//! `claim` (a claim or its release). Each holds the time its writer
//! applied it at, so applying it later gives the same result everywhere.
//! Compaction keeps the latest of each key, which is what applying them
//! all would leave: a definition, the pause state, the last tick, and a
//! claim long expired.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use async_trait::async_trait;

use super::broker::blocking;
use super::publish::{Outbox, Record};
use super::topology::create_topics;
use super::{err, Options, BACKEND};
use crate::error::{Error, Result};
use crate::message::{from_millis, to_millis};
use crate::schedule::{Finished, Schedule, ScheduleStore, ScheduleTable, Stored, TickClaim, Upserted};

const TOPIC: &str = "pb.schedules";
/// Compacted; segments rolled often enough that compaction keeps the
/// topic short even with many schedules firing every second.
const SETTINGS: &[(&str, &str)] =
    &[("cleanup.policy", "compact"), ("segment.ms", "600000"), ("segment.bytes", "16777216")];
/// Longest a read of the topic may take.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// What applying one of this store's own records did.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Upserted(Upserted),
    Claimed(bool),
}

/// The topic as read so far.
struct Folded {
    reader: BaseConsumer,
    /// The next offset to read.
    next: i64,
    table: ScheduleTable,
    /// Outcomes of this store's records, by offset, until their call takes them.
    outcomes: HashMap<i64, Outcome>,
}

/// Schedules kept in Kafka.
pub struct KafkaScheduleStore {
    options: Options,
    outbox: Outbox,
    /// Written into this store's records, to find their outcomes.
    writer: String,
    folded: std::sync::Arc<Mutex<Folded>>,
    ready: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for KafkaScheduleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaScheduleStore")
    }
}

/// One record to write: its key and value (`None`: a tombstone).
type Write = (String, Option<Vec<u8>>);

fn framed(head: &serde_json::Value, payload: &[u8]) -> Vec<u8> {
    let head = head.to_string();
    let mut out = Vec::with_capacity(4 + head.len() + payload.len());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn unframed(bytes: &[u8]) -> Option<(serde_json::Value, &[u8])> {
    let (length, rest) = bytes.split_first_chunk::<4>()?;
    let length = u32::from_be_bytes(*length) as usize;
    if rest.len() < length {
        return None;
    }
    let (head, payload) = rest.split_at(length);
    Some((serde_json::from_slice(head).ok()?, payload))
}

fn now_ms() -> u64 {
    to_millis(SystemTime::now())
}

impl Folded {
    /// Applies one record, noting the outcome if `writer` wrote it.
    fn apply(&mut self, offset: i64, key: &str, value: Option<&[u8]>, writer: &str) {
        let Some((kind, name)) = key.split_once('/') else { return };
        let Some(value) = value else {
            if kind == "def" {
                self.table.remove(name);
            }
            return;
        };
        let Some((head, payload)) = unframed(value) else {
            tracing::warn!(key, offset, "an unreadable record in {TOPIC}; skipped");
            return;
        };
        let at = from_millis(head["at_ms"].as_u64().unwrap_or(0));
        let time = |field: &str| head[field].as_u64().map(from_millis);
        let text = |field: &str| head[field].as_str().unwrap_or_default().to_string();
        let outcome = match kind {
            "def" => {
                let definition = text("definition");
                match Schedule::from_json(name, &definition, Bytes::copy_from_slice(payload))
                    .and_then(|schedule| self.table.upsert(&schedule, at))
                {
                    Ok(upserted) => Some(Outcome::Upserted(upserted)),
                    Err(e) => {
                        tracing::warn!(schedule = name, error = %e, "a stored definition is not valid; skipped");
                        None
                    }
                }
            }
            "paused" => {
                self.table.set_paused(name, head["paused"].as_bool().unwrap_or(false), at);
                None
            }
            "tick" => {
                let last = time("tick_ms").map(|tick| (tick, text("message_id")));
                self.table.finish("", &[Finished { name: name.to_string(), last }]);
                None
            }
            "claim" if head["release"].as_bool() == Some(true) => {
                self.table.finish(&text("owner"), &[Finished { name: name.to_string(), last: None }]);
                None
            }
            "claim" => {
                let claim = TickClaim { name: name.to_string(), seen: time("seen_ms") };
                let lease = time("until_ms").and_then(|u| u.duration_since(at).ok()).unwrap_or_default();
                let held = self.table.claim(&[claim], &text("owner"), lease, at);
                Some(Outcome::Claimed(held[0]))
            }
            _ => None,
        };
        if let Some(outcome) = outcome.filter(|_| head["writer"].as_str() == Some(writer)) {
            self.outcomes.insert(offset, outcome);
        }
    }

    /// Reads the topic up to `upto` (an offset), or to its end when `None`.
    fn catch_up(&mut self, upto: Option<i64>, writer: &str) -> Result<()> {
        let (low, high) = self.reader.fetch_watermarks(TOPIC, 0, Duration::from_secs(10)).map_err(err)?;
        let last = upto.unwrap_or(high - 1);
        if self.next < low {
            // Compacted or deleted from under us: start again from the beginning.
            self.table = ScheduleTable::default();
            self.next = low;
            self.assign()?;
        }
        let deadline = Instant::now() + READ_LIMIT;
        while self.next <= last {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { operation: "reading the schedules", after: READ_LIMIT });
            }
            let Some(polled) = self.reader.poll(left.min(Duration::from_millis(500))) else { continue };
            let m = polled.map_err(err)?;
            if m.offset() < self.next {
                continue;
            }
            let offset = m.offset();
            let key = m.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            let value = m.payload().map(<[u8]>::to_vec);
            drop(m);
            self.next = offset + 1;
            self.apply(offset, &key, value.as_deref(), writer);
        }
        Ok(())
    }

    fn assign(&self) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Offset(self.next)).map_err(err)?;
        self.reader.assign(&tpl).map_err(err)
    }
}

impl KafkaScheduleStore {
    pub(super) fn new(options: &Options, outbox: Outbox) -> Result<Self> {
        let mut config = options.client_config();
        // Reads by assignment: librdkafka wants a group id, never joined or committed to.
        config
            .set("group.id", "pillarbox-schedules-reader")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // What it fetches ahead stays small: most processes read rarely.
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.wait.max.ms", "50");
        let reader: BaseConsumer = config.create().map_err(err)?;
        let folded = Folded { reader, next: 0, table: ScheduleTable::default(), outcomes: HashMap::new() };
        Ok(KafkaScheduleStore {
            options: options.clone(),
            outbox,
            writer: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            folded: std::sync::Arc::new(Mutex::new(folded)),
            ready: tokio::sync::OnceCell::new(),
        })
    }

    /// The topic exists and the reader reads it.
    async fn ready(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let admin: AdminClient<DefaultClientContext> = self.options.client_config().create().map_err(err)?;
                create_topics(&admin, &self.outbox.producer, &self.options, vec![(TOPIC.to_string(), 1, SETTINGS)])
                    .await?;
                self.folded.lock().unwrap().assign()
            })
            .await
            .map(|_| ())
    }

    /// Reads the topic (to its end, or up to `upto`), then runs `then` on
    /// what it made.
    async fn read<T: Send + 'static>(
        &self,
        upto: Option<i64>,
        then: impl FnOnce(&mut Folded) -> T + Send + 'static,
    ) -> Result<T> {
        self.ready().await?;
        let (folded, writer) = (std::sync::Arc::clone(&self.folded), self.writer.clone());
        blocking(move || {
            let mut folded = folded.lock().unwrap();
            folded.catch_up(upto, &writer)?;
            Ok(then(&mut folded))
        })
        .await
    }

    /// Writes records, waits until Kafka has them all; returns their offsets.
    async fn write(&self, writes: &[Write]) -> Result<Vec<i64>> {
        self.ready().await?;
        let records: Vec<Record<'_>> = writes
            .iter()
            .map(|(key, value)| Record {
                topic: TOPIC,
                key: Some(key.as_bytes()),
                headers: &[],
                payload: value.as_deref(),
            })
            .collect();
        self.outbox.send_all(&records).await
    }

    fn head(&self, fields: serde_json::Value) -> serde_json::Value {
        let mut head = fields;
        head["writer"] = self.writer.clone().into();
        head["at_ms"] = now_ms().into();
        head
    }
}

#[async_trait]
impl ScheduleStore for KafkaScheduleStore {
    async fn upsert(&self, schedule: &Schedule) -> Result<Upserted> {
        schedule.check()?;
        let same = schedule.clone();
        let unchanged = self.read(None, move |f| f.table.list().iter().any(|s| s.schedule == same)).await?;
        if unchanged {
            return Ok(Upserted::Unchanged);
        }
        let head = self.head(serde_json::json!({ "definition": schedule.definition_json() }));
        let offsets = self.write(&[(format!("def/{}", schedule.name), Some(framed(&head, &schedule.payload)))]).await?;
        let offset = offsets[0];
        let outcome = self.read(Some(offset), move |f| f.outcomes.remove(&offset)).await?;
        match outcome {
            Some(Outcome::Upserted(upserted)) => Ok(upserted),
            _ => Err(Error::Backend { backend: BACKEND, reason: "an upsert was not read back".into() }),
        }
    }

    async fn list(&self) -> Result<Vec<Stored>> {
        self.read(None, |f| f.table.list()).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        let wanted = name.to_string();
        if !self.read(None, move |f| f.table.list().iter().any(|s| s.schedule.name == wanted)).await? {
            return Ok(false);
        }
        let head = self.head(serde_json::json!({ "paused": paused }));
        self.write(&[(format!("paused/{name}"), Some(framed(&head, &[])))]).await?;
        Ok(true)
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        let wanted = name.to_string();
        if !self.read(None, move |f| f.table.list().iter().any(|s| s.schedule.name == wanted)).await? {
            return Ok(false);
        }
        let writes: Vec<Write> =
            ["def", "paused", "tick", "claim"].iter().map(|k| (format!("{k}/{name}"), None)).collect();
        self.write(&writes).await?;
        Ok(true)
    }

    async fn claim(&self, claims: &[TickClaim], owner: &str, lease: Duration) -> Result<Vec<bool>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let until = now_ms() + lease.as_millis() as u64;
        let writes: Vec<Write> = claims
            .iter()
            .map(|c| {
                let head = self.head(serde_json::json!({
                    "owner": owner,
                    "seen_ms": c.seen.map(to_millis),
                    "until_ms": until,
                }));
                (format!("claim/{}", c.name), Some(framed(&head, &[])))
            })
            .collect();
        let offsets = self.write(&writes).await?;
        let last = offsets.iter().copied().max().unwrap_or(-1);
        self.read(Some(last), move |f| {
            offsets.iter().map(|offset| matches!(f.outcomes.remove(offset), Some(Outcome::Claimed(true)))).collect()
        })
        .await
    }

    async fn finish(&self, owner: &str, finished: &[Finished]) -> Result<()> {
        let mut writes = Vec::with_capacity(finished.len() * 2);
        for done in finished {
            if let Some((tick, id)) = &done.last {
                let head = self.head(serde_json::json!({ "tick_ms": to_millis(*tick), "message_id": id }));
                writes.push((format!("tick/{}", done.name), Some(framed(&head, &[]))));
            }
            let head = self.head(serde_json::json!({ "owner": owner, "release": true }));
            writes.push((format!("claim/{}", done.name), Some(framed(&head, &[]))));
        }
        if !writes.is_empty() {
            self.write(&writes).await?;
        }
        Ok(())
    }
}
