//! A group's dead letters: a compacted topic keyed by message id, where a
//! record without a value (a tombstone) removes one. Read incrementally:
//! each call reads only what was added since the last Then the broker's
//! dead-letter operations over it: producing one, listing, redriving
//! (to the group's own due-now retry topic) and purging (tombstones).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::broker::{blocking, KafkaBroker};
use super::publish::{delivered, Record};
use super::{dlq_topic, err, header_pairs, retry_topic, Options};
use crate::broker::Broker;
use crate::dead_letter::{self, DeadLetter};
use crate::error::{Error, Result};
use crate::message::{from_millis, Message};
use crate::wire;

/// What is known of one dead-letter topic.
#[derive(Default)]
struct View {
    /// Next offset to read.
    next: i64,
    /// Live dead letters by offset.
    live: BTreeMap<i64, DeadLetter>,
    /// Offset of every id seen (for paging after an id that is gone).
    positions: HashMap<String, i64>,
}

/// Reads dead-letter topics (partition 0 of each) for one broker handle.
pub(super) struct DeadLetterViews {
    scanner: Mutex<BaseConsumer>,
    views: Mutex<HashMap<String, View>>,
}

/// Longest a catch-up read may take.
const SCAN_LIMIT: Duration = Duration::from_secs(15);

impl DeadLetterViews {
    pub fn new(options: &Options) -> Result<Self> {
        let mut config = options.client_config();
        // Reads by assignment: the group id is required by librdkafka, never joined or committed to.
        config
            .set("group.id", "pillarbox-dead-letter-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let scanner: BaseConsumer = config.create().map_err(err)?;
        Ok(DeadLetterViews { scanner: Mutex::new(scanner), views: Mutex::new(HashMap::new()) })
    }

    /// Reads what was added to `dlq` since the last call (blocking).
    fn catch_up(&self, dlq: &str, topic: &str, group: &str) -> Result<()> {
        let scanner = self.scanner.lock().unwrap();
        let (low, high) = scanner.fetch_watermarks(dlq, 0, Duration::from_secs(10)).map_err(err)?;
        let mut views = self.views.lock().unwrap();
        let view = views.entry(dlq.to_string()).or_default();
        if view.next < low {
            view.live.retain(|offset, _| *offset >= low);
            view.next = low;
        }
        if view.next >= high {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(dlq, 0, Offset::Offset(view.next)).map_err(err)?;
        scanner.assign(&tpl).map_err(err)?;
        let deadline = Instant::now() + SCAN_LIMIT;
        while view.next < high {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { operation: "reading dead letters", after: SCAN_LIMIT });
            }
            let Some(polled) = scanner.poll(left.min(Duration::from_millis(500))) else { continue };
            let m = polled.map_err(err)?;
            view.next = m.offset() + 1;
            let Some(id) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else { continue };
            if let Some(old) = view.positions.insert(id.clone(), m.offset()) {
                view.live.remove(&old);
            }
            let Some(payload) = m.payload() else { continue }; // tombstone: removed
            let decoded = wire::decode(header_pairs(&m), Bytes::copy_from_slice(payload), 1);
            let at = m.timestamp().to_millis().filter(|t| *t >= 0).map_or(SystemTime::now(), |t| from_millis(t as u64));
            // (The reason headers, `pb-dl-partition` and `pb-dl-offset` included, become the reason.)
            view.live.insert(m.offset(), dead_letter::from_stored(id, decoded.message, topic, group, at));
        }
        let _ = scanner.unassign();
        Ok(())
    }

    /// Live dead letters after `after` (an id), oldest first.
    pub fn list(
        &self,
        dlq: &str,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.catch_up(dlq, topic, group)?;
        let views = self.views.lock().unwrap();
        let Some(view) = views.get(dlq) else { return Ok(Vec::new()) };
        let from = after.and_then(|id| view.positions.get(id)).map_or(i64::MIN, |o| o + 1);
        Ok(view.live.range(from..).take(limit).map(|(_, d)| d.clone()).collect())
    }

    /// Live dead letters among `ids` (all when `None`).
    pub fn select(&self, dlq: &str, topic: &str, group: &str, ids: Option<&[String]>) -> Result<Vec<DeadLetter>> {
        self.catch_up(dlq, topic, group)?;
        let views = self.views.lock().unwrap();
        let Some(view) = views.get(dlq) else { return Ok(Vec::new()) };
        Ok(view.live.values().filter(|d| ids.is_none_or(|ids| ids.contains(&d.id))).cloned().collect())
    }

    /// How many are live.
    pub fn count(&self, dlq: &str, topic: &str, group: &str) -> Result<u64> {
        self.catch_up(dlq, topic, group)?;
        Ok(self.views.lock().unwrap().get(dlq).map_or(0, |v| v.live.len() as u64))
    }

    /// Forgets ids this handle removed (their tombstones are read later anyway).
    pub fn forget(&self, dlq: &str, ids: &[String]) {
        if let Some(view) = self.views.lock().unwrap().get_mut(dlq) {
            view.live.retain(|_, d| !ids.contains(&d.id));
        }
    }
}

/// Dead letters: the partition the message was read from.
pub const DL_PARTITION: &str = "pb-dl-partition";
/// Dead letters: its offset there.
pub const DL_OFFSET: &str = "pb-dl-offset";

impl KafkaBroker {
    pub(super) async fn produce_dead_letter(
        &self,
        topic: &str,
        group: &str,
        letter: Vec<(String, String)>,
        m: &Message,
    ) -> Result<()> {
        self.outbox.send(&dlq_topic(topic, group), Some(m.id.as_bytes()), &letter, &m.payload).await
    }

    /// Tombstones (a key without a value) for dead letters: the view
    /// drops them at once, compaction for good.
    async fn remove_dead_letters(&self, dlq: &str, ids: &[String]) -> Result<()> {
        let mut pending = Vec::with_capacity(ids.len());
        for id in ids {
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq).key(id.as_bytes());
            pending.push(self.outbox.producer.send_result(record).map_err(|(e, _)| err(e))?);
        }
        for f in pending {
            delivered(f.await)?;
        }
        self.dead_letters.forget(dlq, ids);
        Ok(())
    }

    pub(super) async fn list_dead(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        self.ensure_group(topic, group).await?;
        let views = Arc::clone(&self.dead_letters);
        let (dlq, t, g, after) =
            (dlq_topic(topic, group), topic.to_string(), group.to_string(), after.map(String::from));
        blocking(move || views.list(&dlq, &t, &g, after.as_deref(), limit)).await
    }

    pub(super) async fn redrive_dead(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.check_open()?;
        self.ensure_group(topic, group).await?;
        let views = Arc::clone(&self.dead_letters);
        let (dlq, t, g, wanted) = (dlq_topic(topic, group), topic.to_string(), group.to_string(), ids.to_vec());
        let letters = blocking(move || views.select(&dlq, &t, &g, Some(&wanted))).await?;
        if letters.is_empty() {
            return Ok(0);
        }
        // To this group's own due-now retry topic: never re-fanned-out to other groups.
        let target = retry_topic(topic, group, 0);
        let fresh: Vec<Message> = letters.iter().map(|d| dead_letter::redriven(d.message.clone())).collect();
        let headers: Vec<Vec<(String, String)>> = fresh.iter().map(wire::encode_headers).collect();
        let records: Vec<Record<'_>> = fresh
            .iter()
            .zip(&headers)
            .map(|(m, h)| Record {
                topic: &target,
                key: m.key.as_deref().map(str::as_bytes),
                headers: h,
                payload: Some(&m.payload),
            })
            .collect();
        self.outbox.send_all(&records).await?;
        let moved: Vec<String> = letters.into_iter().map(|d| d.id).collect();
        self.remove_dead_letters(&dlq_topic(topic, group), &moved).await?;
        Ok(moved.len())
    }

    pub(super) async fn purge_dead(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.check_open()?;
        self.ensure_group(topic, group).await?;
        let views = Arc::clone(&self.dead_letters);
        let (dlq, t, g, wanted) =
            (dlq_topic(topic, group), topic.to_string(), group.to_string(), ids.map(<[String]>::to_vec));
        let letters = blocking(move || views.select(&dlq, &t, &g, wanted.as_deref())).await?;
        let gone: Vec<String> = letters.into_iter().map(|d| d.id).collect();
        if !gone.is_empty() {
            self.remove_dead_letters(&dlq_topic(topic, group), &gone).await?;
        }
        Ok(gone.len())
    }
}
