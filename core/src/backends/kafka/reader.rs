//! One Kafka consumer per worker: what it handed out, what it may commit,
//! which partitions wait for their head to be due, and rebalances.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::broker::Outbox;
use super::outstanding::Outstanding;
use super::{
    consumer_group, delay_topic, err, header_fields, header_pairs, level_for, retry_topic, Options, BACKEND, LEVELS,
};
use crate::broker::{Delivery, Receipt};
use crate::error::{Error, Result};
use crate::message::{from_millis, to_millis, Message};
use crate::wire;
use crate::FastMap;

/// Where a subscribed topic sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Main,
    Delay(u64),
    Retry(u64),
}

/// A topic (its name shared, not copied per message) and partition.
type Part = (Arc<str>, i32);

/// Deliveries recorded in a partition's commit metadata: the offsets from
/// the committed one up to `through` were handed out `count` times (counts
/// fall as offsets rise). Written `pb1:through:count,...`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Marks(Vec<(i64, u32)>);

/// How long a background commit waits for more settlements to share it.
/// Commits share the broker connection with fetches: fewer, larger ones
/// keep the fetches flowing.
const COMMIT_LINGER: Duration = Duration::from_millis(10);

/// Segments kept in the metadata (older ones merge into the last).
const MAX_MARKS: usize = 16;

/// How many receives' worth the delivery record claims past what was
/// handed out. A commit takes about a millisecond; at one receive's worth
/// the handlers often caught up with the record and waited for it.
const RECORD_AHEAD: i64 = 2;

/// How far a partition's lead may grow, in multiples of `RECORD_AHEAD`
/// receives: its handlers outran the record (librdkafka hands a fetched
/// partition out in bursts of thousands), so it leads by twice as much.
/// The record moves on every half lead: at 8 a fast consumer committed ten
/// times as often as with the record in the background (and every lead
/// doubling made a receive wait for a commit); 32 halves that (+10-25%
/// consuming a backlog). The price stays what a lead costs: after a crash,
/// messages claimed and never handed out count one attempt more.
const MAX_LEAD_GROWTH: i64 = 32;

/// How many receives' worth the reading task admits ahead of the receives.
/// At one, it stopped as soon as a receive found its batch ready and
/// started again only once the receive had taken it: each waited for the
/// other (+15% consuming a backlog at three, with the record kept in the
/// background).
const READ_AHEAD: usize = 3;

impl Marks {
    pub fn parse(s: &str) -> Marks {
        let Some(body) = s.strip_prefix("pb1:") else { return Marks::default() };
        let mut marks = Vec::new();
        for seg in body.split(',').filter(|s| !s.is_empty()) {
            let Some((t, c)) = seg.split_once(':') else { return Marks::default() };
            match (t.parse::<i64>(), c.parse::<u32>()) {
                (Ok(t), Ok(c)) if c > 0 => marks.push((t, c)),
                _ => return Marks::default(),
            }
        }
        marks.sort_by_key(|m| m.0);
        Marks(marks)
    }

    pub fn encode(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let body: Vec<String> = self.0.iter().map(|(t, c)| format!("{t}:{c}")).collect();
        format!("pb1:{}", body.join(","))
    }

    /// How many times `offset` was handed out before.
    pub fn count_at(&self, offset: i64) -> u32 {
        self.0.iter().find(|(t, _)| offset <= *t).map_or(0, |m| m.1)
    }

    /// These marks plus one delivery of every offset up to `through`.
    pub fn with_prefix(&self, through: i64) -> Marks {
        let mut points: Vec<i64> = self.0.iter().map(|m| m.0).chain([through]).collect();
        points.sort_unstable();
        points.dedup();
        let marks = points.into_iter().map(|t| (t, self.count_at(t) + u32::from(t <= through))).collect();
        Marks(marks)
    }

    /// The marks that still matter once everything before `start` is committed.
    pub fn from(&self, start: i64) -> Marks {
        let mut marks: Vec<(i64, u32)> = self.0.iter().copied().filter(|(t, _)| *t >= start).collect();
        if marks.len() > MAX_MARKS {
            let tail = marks.split_off(MAX_MARKS - 1);
            let last = tail.last().copied().unwrap_or_default();
            let lowest = tail.iter().map(|m| m.1).min().unwrap_or(1);
            marks.push((last.0, lowest));
        }
        Marks(marks)
    }

    /// The highest offset handed out, if any.
    pub fn through(&self) -> Option<i64> {
        self.0.last().map(|m| m.0)
    }
}

/// A commit a partition needs: offset and metadata, and the offset its
/// delivery record claims.
#[derive(Debug, PartialEq, Eq)]
struct Wanted {
    commit: (i64, String),
    claim: Option<i64>,
}

/// One assigned partition.
#[derive(Debug)]
struct Track {
    epoch: u64,
    /// Deliveries before this assignment (from the commit metadata).
    base: Marks,
    /// Highest offset this consumer handed out.
    handed_through: Option<i64>,
    /// Highest offset the last committed delivery record claims: up to
    /// `RECORD_AHEAD` receives' worth past `handed_through` (or this
    /// partition's `lead`), so that handing out rarely waits for a commit.
    recorded_through: Option<i64>,
    /// The lead this partition earned by outrunning its record (0: none).
    lead: i64,
    /// One past the highest offset handed out or settled here.
    next: Option<i64>,
    /// Handed out and not yet committed: settled (true) or not (false).
    outstanding: Outstanding,
    /// The last commit that succeeded.
    committed: Option<(i64, String)>,
}

impl Track {
    fn new(epoch: u64, committed: Option<i64>, metadata: &str) -> Track {
        let base = committed.map(|c| Marks::parse(metadata).from(c)).unwrap_or_default();
        Track {
            epoch,
            base,
            handed_through: None,
            recorded_through: None,
            lead: 0,
            next: committed,
            outstanding: Outstanding::default(),
            committed: committed.map(|c| (c, metadata.to_string())),
        }
    }

    /// The offset to commit: the lowest one not settled.
    fn commit_point(&mut self) -> Option<i64> {
        self.outstanding.drop_settled_front().or(self.next)
    }

    /// How far past what was handed out the record claims: `ahead`, or
    /// the lead this partition earned; nothing when `ahead` is 0.
    fn lead(&self, ahead: i64) -> i64 {
        if ahead == 0 {
            0
        } else {
            ahead.max(self.lead)
        }
    }

    /// The offset a delivery record written now claims: what was handed
    /// out, plus the lead.
    fn claim(&self, ahead: i64) -> Option<i64> {
        self.handed_through.map(|t| t + self.lead(ahead))
    }

    fn marks(&self, ahead: i64) -> Marks {
        match self.claim(ahead) {
            Some(t) => self.base.with_prefix(t),
            None => self.base.clone(),
        }
    }

    /// The commit this partition needs, if it differs from the last one,
    /// with the offset its record claims. `ahead` 0 records exactly what was
    /// handed out (when giving partitions up).
    fn wanted(&mut self, ahead: i64) -> Option<Wanted> {
        let point = self.commit_point()?;
        let wanted = (point, self.marks(ahead).from(point).encode());
        (self.committed.as_ref() != Some(&wanted)).then_some(Wanted { commit: wanted, claim: self.claim(ahead) })
    }

    /// Whether everything handed out is in the committed record; and whether
    /// the record's lead has shrunk below half. Handlers that outran the
    /// record double this partition's lead (up to `MAX_LEAD_GROWTH` times
    /// `ahead`): a slow consumer keeps a short lead, a fast one stops waiting.
    fn check_record(&mut self, ahead: i64) -> (bool, bool) {
        let lead = self.lead(ahead);
        match (self.handed_through, self.recorded_through) {
            (None, _) => (true, false),
            (Some(_), None) => (false, true),
            (Some(h), Some(r)) if r < h => {
                self.lead = (lead * 2).min(ahead * MAX_LEAD_GROWTH);
                (false, true)
            }
            (Some(h), Some(r)) => (true, r - h < lead / 2),
        }
    }

    /// Takes back an offset admitted and never handed out: it no longer
    /// counts as handed out, and the commit point stays below it. Only for a
    /// partition nothing more is admitted from (being given up, or the
    /// reader closing): the consumer's position is past it.
    fn withdraw(&mut self, offset: i64) {
        if self.outstanding.remove(offset) == Some(false) {
            self.next = Some(self.next.map_or(offset, |n| n.min(offset)));
            self.handed_through = self.handed_through.map(|h| h.min(offset - 1));
        }
    }

    fn unsettled(&self) -> bool {
        self.outstanding.any_unsettled()
    }
}

/// What to do with a message just read.
enum Admission {
    /// Read before a pause, a seek or a revocation, or handed out already:
    /// it comes again, or came.
    Stale,
    /// Hand it out; it was delivered `earlier` times before this assignment.
    HandOut { earlier: u32, epoch: u64 },
    /// A waiting message that is not due.
    NotDue,
}

/// The length of the run at the start of `items` from one partition of one
/// assignment: what the state is looked up once for, not once per message
/// (librdkafka hands a partition's messages out in runs of thousands).
fn run_len<T>(items: &[T], key: impl Fn(&T) -> (&Arc<str>, i32, u64)) -> usize {
    let Some(first) = items.first() else { return 0 };
    let (topic, partition, epoch) = key(first);
    items
        .iter()
        .take_while(|item| {
            let (t, p, e) = key(item);
            p == partition && e == epoch && Arc::ptr_eq(t, topic)
        })
        .count()
}

impl Track {
    /// Decides about one message of this partition and, when it is handed
    /// out, records it.
    fn admit(&mut self, m: &Incoming) -> Admission {
        if self.next.is_some_and(|n| m.offset < n) || self.outstanding.contains(m.offset) {
            return Admission::Stale;
        }
        let waits = matches!(m.kind, Kind::Delay(_) | Kind::Retry(_));
        if waits && m.deliver_at_ms().is_some_and(|due| due > to_millis(SystemTime::now())) {
            return Admission::NotDue;
        }
        self.outstanding.insert(m.offset, false);
        self.next = Some(self.next.map_or(m.offset + 1, |n| n.max(m.offset + 1)));
        self.handed_through = Some(self.handed_through.map_or(m.offset, |h| h.max(m.offset)));
        Admission::HandOut { earlier: self.base.count_at(m.offset), epoch: self.epoch }
    }
}

impl ReaderState {
    /// The partition's state, if it is assigned now and neither paused nor
    /// being given up: a message read from any other was fetched before a
    /// pause (it comes again) or is someone else's now (a commit would move
    /// their offset).
    fn admitting(&mut self, topic: &Arc<str>, partition: i32) -> Option<&mut Track> {
        let part: Part = (Arc::clone(topic), partition);
        if self.paused.contains_key(&part) || self.revoking.contains(&part) {
            return None;
        }
        self.parts.get_mut(&part)
    }

    /// Decides about messages in order, into `decided`, and records those
    /// handed out; stops after the first that is not due.
    fn admit_all(&mut self, messages: &[Incoming], decided: &mut Vec<Admission>) {
        let mut rest = messages;
        while !rest.is_empty() {
            let n = run_len(rest, |m| (&m.topic, m.partition, 0));
            let mut track = self.admitting(&rest[0].topic, rest[0].partition);
            for m in &rest[..n] {
                let admission = track.as_deref_mut().map_or(Admission::Stale, |t| t.admit(m));
                let not_due = matches!(admission, Admission::NotDue);
                decided.push(admission);
                if not_due {
                    return;
                }
            }
            rest = &rest[n..];
        }
    }

    /// Decides about one message (see `admit_all`).
    #[cfg(test)]
    fn admit(&mut self, m: &Incoming) -> Admission {
        self.admitting(&m.topic, m.partition).map_or(Admission::Stale, |t| t.admit(m))
    }

    /// The partition's state, if it is still the assignment `epoch`.
    fn assigned(&mut self, topic: &Arc<str>, partition: i32, epoch: u64) -> Option<&mut Track> {
        self.parts.get_mut(&(Arc::clone(topic), partition)).filter(|t| t.epoch == epoch)
    }

    /// Takes back deliveries admitted and never handed out (see `Track::withdraw`).
    fn withdraw<'a>(&mut self, deliveries: impl IntoIterator<Item = &'a Delivery>) {
        for d in deliveries {
            let Ok(r) = d.receipt_as::<KafkaReceipt>(BACKEND) else { continue };
            if let Some(t) = self.assigned(&r.topic, r.partition, r.epoch) {
                t.withdraw(r.offset);
            }
        }
    }

    /// Marks deliveries settled; returns the position of the first that was
    /// not held (its partition went away, or it was settled already).
    fn settle_all(&mut self, receipts: &[&KafkaReceipt]) -> Option<usize> {
        let mut lost = None;
        let mut done = 0;
        while done < receipts.len() {
            let rest = &receipts[done..];
            let n = run_len(rest, |r| (&r.topic, r.partition, r.epoch));
            let mut track = self.assigned(&rest[0].topic, rest[0].partition, rest[0].epoch);
            for (i, r) in rest[..n].iter().enumerate() {
                if !track.as_deref_mut().is_some_and(|t| t.outstanding.settle(r.offset)) {
                    lost = lost.or(Some(done + i));
                }
            }
            done += n;
        }
        lost
    }
}

#[derive(Debug, Default)]
pub(super) struct ReaderState {
    /// Looked up a few times a message: hashed with ahash, not SipHash.
    parts: FastMap<Part, Track>,
    /// Partitions whose head is not due, and when to look again.
    paused: FastMap<Part, SystemTime>,
    /// Partitions the group took away, kept until what was handed out from
    /// them is settled or the deadline passes.
    revoking: Vec<Part>,
    revoke_deadline: Option<Instant>,
    closing: bool,
    /// The eager protocol: a rebalance takes every partition away and
    /// assigns anew (otherwise only the partitions that move).
    eager: bool,
    next_epoch: u64,
    /// The subscribed topics' names, shared by every message and receipt.
    names: HashMap<String, Arc<str>>,
}

impl ReaderState {
    fn part(&self, topic: &str, partition: i32) -> Part {
        (self.names.get(topic).cloned().unwrap_or_else(|| Arc::from(topic)), partition)
    }

    /// Takes the revocation if it may complete now.
    fn take_revocation(&mut self, force: bool) -> Option<(Vec<Part>, TopicPartitionList)> {
        if self.revoking.is_empty() {
            return None;
        }
        let drained = self.revoking.iter().all(|p| self.parts.get(p).is_none_or(|t| !t.unsettled()));
        let late = self.revoke_deadline.is_some_and(|d| Instant::now() >= d);
        if !(force || drained || late || self.closing) {
            return None;
        }
        let parts = std::mem::take(&mut self.revoking);
        self.revoke_deadline = None;
        let mut commits = TopicPartitionList::new();
        for p in &parts {
            self.paused.remove(p);
            if let Some(mut t) = self.parts.remove(p) {
                // Given up: the record says exactly what was handed out.
                if let Some(Wanted { commit: (offset, meta), .. }) = t.wanted(0) {
                    add_commit(&mut commits, p, offset, meta);
                }
            }
        }
        Some((parts, commits))
    }
}

/// Adds a partition's commit (offset and delivery record) to a list.
fn add_commit(tpl: &mut TopicPartitionList, part: &Part, offset: i64, metadata: String) {
    if tpl.add_partition_offset(&part.0, part.1, Offset::Offset(offset)).is_ok() {
        if let Some(mut e) = tpl.find_partition(&part.0, part.1) {
            e.set_metadata(metadata);
        }
    }
}

/// Gives up revoked partitions: commits what they settled, then lets the
/// group move them.
fn finish_revocation<C: Consumer<ReaderContext>>(consumer: &C, state: &Mutex<ReaderState>, force: bool) {
    let (taken, eager) = {
        let mut st = state.lock().unwrap();
        (st.take_revocation(force), st.eager)
    };
    let Some((parts, commits)) = taken else { return };
    if commits.count() > 0 {
        if let Err(e) = consumer.commit(&commits, CommitMode::Sync) {
            tracing::warn!(error = %e, "commit before giving up partitions failed; their settled messages may come again");
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in &parts {
        tpl.add_partition(topic, *partition);
    }
    let given_up = if eager { consumer.unassign() } else { consumer.incremental_unassign(&tpl) };
    if let Err(e) = given_up {
        tracing::warn!(error = %e, "could not give up revoked partitions");
    }
}

/// `topic[partition]`, for logs.
fn names(tpl: &TopicPartitionList) -> String {
    let names: Vec<String> = tpl.elements().iter().map(|e| format!("{}[{}]", e.topic(), e.partition())).collect();
    names.join(" ")
}

/// A tenth of the session timeout, between 100 ms and librdkafka's 3 s.
fn heartbeat_interval(session_timeout: Duration) -> Duration {
    (session_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(3))
}

/// Rebalance handling for a reader's consumer.
pub(super) struct ReaderContext {
    state: Arc<Mutex<ReaderState>>,
    revoke_wait: Duration,
}

impl ClientContext for ReaderContext {}

impl ConsumerContext for ReaderContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Where the group stands on each new partition: the committed
                // offset and who was handed what before.
                let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)).ok();
                // Each partition starts where the group stands, known now:
                // librdkafka need not ask again, and a partition with no
                // commit starts at its beginning at once (left to
                // `auto.offset.reset`, librdkafka waited 100 ms first).
                let mut starts = TopicPartitionList::new();
                {
                    let mut st = self.state.lock().unwrap();
                    for e in tpl.elements() {
                        let part = st.part(e.topic(), e.partition());
                        let (offset, meta) = committed
                            .as_ref()
                            .and_then(|c| c.find_partition(e.topic(), e.partition()))
                            .map(|c| (c.offset().to_raw().filter(|o| *o >= 0), c.metadata().to_string()))
                            .unwrap_or((None, String::new()));
                        let start = match (&committed, offset) {
                            (Some(_), Some(o)) => Offset::Offset(o),
                            (Some(_), None) => Offset::Beginning,
                            (None, _) => Offset::Invalid, // unknown: librdkafka looks it up
                        };
                        let _ = starts.add_partition_offset(e.topic(), e.partition(), start);
                        st.next_epoch += 1;
                        let epoch = st.next_epoch;
                        st.parts.insert(part.clone(), Track::new(epoch, offset, &meta));
                        st.paused.remove(&part);
                        st.revoking.retain(|p| p != &part);
                    }
                }
                tracing::debug!(partitions = %names(tpl), "assigned");
                let eager = self.state.lock().unwrap().eager;
                let taken = if eager { consumer.assign(&starts) } else { consumer.incremental_assign(&starts) };
                if let Err(e) = taken {
                    tracing::warn!(error = %e, "could not take assigned partitions");
                }
                // A pause outlives an assignment in librdkafka: a partition
                // paused when it was taken away (or while its head waited)
                // would never be fetched again after coming back.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!(error = %e, "could not resume assigned partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                tracing::debug!(partitions = %names(tpl), lost, "revoked");
                {
                    let mut st = self.state.lock().unwrap();
                    for e in tpl.elements() {
                        let part = st.part(e.topic(), e.partition());
                        if !st.revoking.contains(&part) {
                            st.revoking.push(part);
                        }
                    }
                    st.revoke_deadline.get_or_insert(Instant::now() + self.revoke_wait);
                }
                // Nothing more is handed out from them; what is out gets settled first.
                let _ = consumer.pause(tpl);
                finish_revocation(consumer, &self.state, lost);
            }
            _ => {
                tracing::warn!(error = ?err, "rebalance error");
                let eager = self.state.lock().unwrap().eager;
                let _ = if eager { consumer.unassign() } else { consumer.incremental_unassign(tpl) };
            }
        }
    }
}

/// Which message a delivery holds.
pub(super) struct KafkaReceipt {
    pub reader: Arc<Reader>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    epoch: u64,
}

/// The kind of the topic a message came from, remembered for the next
/// message (most come from the same topic as the one before): one string
/// comparison instead of a hash lookup per message.
#[derive(Default)]
struct KindCache {
    last: Option<(String, Kind, Arc<str>)>,
}

impl KindCache {
    /// `None` for a topic this consumer does not read.
    fn get(&mut self, topic: &str, kinds: &HashMap<String, (Kind, Arc<str>)>) -> Option<(Kind, Arc<str>)> {
        match &self.last {
            Some((name, kind, shared)) if name == topic => Some((*kind, Arc::clone(shared))),
            _ => {
                let (kind, shared) = kinds.get(topic)?;
                self.last = Some((topic.to_string(), *kind, Arc::clone(shared)));
                Some((*kind, Arc::clone(shared)))
            }
        }
    }
}

/// A message copied out of the consumer.
struct Incoming {
    kind: Kind,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Bytes>,
    body: Body,
}

// The large variant is the common one: boxing it would allocate per message.
#[allow(clippy::large_enum_variant)]
enum Body {
    /// A main topic message, decoded straight from the client's buffers
    /// (its attempt counts this delivery only, until its record is known),
    /// already in the `Arc` its delivery shares it by: a message is a few
    /// hundred bytes, and it is moved several times on its way out.
    Decoded { message: Arc<Message>, malformed: Option<String> },
    /// A waiting message, kept in its wire form: it may move on as it is.
    Wire { headers: Vec<(String, String)>, payload: Bytes },
}

/// The messages and receipts of deliveries the worker is done with, kept
/// by the reading task for the next messages it reads: their allocations
/// (a message, its id, a receipt: three a message) are reused rather than
/// freed and made again, in the task that does most of a consumer's work
/// (+12% consuming a 400,000 backlog, median of 8 alternating pairs).
/// Local to the reading task: the receipts hold the reader, and go with the task.
#[derive(Default)]
struct Spares {
    messages: Vec<Arc<Message>>,
    receipts: Vec<Receipt>,
}

/// Most spares kept of each (more than a worker's window is never needed).
const MAX_SPARES: usize = 1024;

impl Spares {
    /// Keeps what only these deliveries still hold; drops the rest.
    fn recycle(&mut self, finished: &mut Vec<Delivery>) {
        for d in finished.drain(..) {
            let (mut message, mut receipt) = (d.message, d.receipt);
            if self.messages.len() < MAX_SPARES {
                if let Some(m) = Arc::get_mut(&mut message) {
                    // The payload may be large: not kept until the next message.
                    m.payload = Bytes::new();
                    self.messages.push(message);
                }
            }
            if self.receipts.len() < MAX_SPARES && receipt.get_mut::<KafkaReceipt>().is_some() {
                self.receipts.push(receipt);
            }
        }
    }

    /// Decodes a main topic message into a spare message, or a new one.
    fn decode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a str, std::borrow::Cow<'a, str>)>,
        payload: Bytes,
    ) -> (Arc<Message>, Option<String>) {
        if let Some(mut message) = self.messages.pop() {
            if let Some(m) = Arc::get_mut(&mut message) {
                let malformed = wire::decode_into(m, fields, payload, 1);
                return (message, malformed);
            }
        }
        let decoded = wire::decode(fields, payload, 1);
        (Arc::new(decoded.message), decoded.malformed)
    }

    /// A receipt for `value`, in a spare one if there is one.
    fn receipt(&mut self, value: KafkaReceipt) -> Receipt {
        if let Some(mut receipt) = self.receipts.pop() {
            if let Some(r) = receipt.get_mut::<KafkaReceipt>() {
                *r = value;
                return receipt;
            }
        }
        Receipt::new(value)
    }
}

impl Incoming {
    /// Copies a message of `topic`, of kind `kind`, out of the client's buffers.
    fn copy(m: &rdkafka::message::BorrowedMessage<'_>, kind: Kind, topic: Arc<str>, spares: &mut Spares) -> Incoming {
        let payload = m.payload().map(Bytes::copy_from_slice).unwrap_or_default();
        let body = match kind {
            Kind::Main => {
                let (message, malformed) = spares.decode(header_pairs(m), payload);
                Body::Decoded { message, malformed }
            }
            Kind::Delay(_) | Kind::Retry(_) => Body::Wire { headers: header_fields(m), payload },
        };
        Incoming {
            kind,
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(Bytes::copy_from_slice),
            body,
        }
    }

    fn deliver_at_ms(&self) -> Option<u64> {
        match &self.body {
            Body::Decoded { message, .. } => message.deliver_at.map(to_millis),
            Body::Wire { headers, .. } => {
                headers.iter().find(|(k, _)| k == wire::DELIVER_AT).and_then(|(_, v)| v.trim().parse().ok())
            }
        }
    }
}

/// A worker's consumer.
pub(super) struct Reader {
    consumer: StreamConsumer<ReaderContext>,
    state: Arc<Mutex<ReaderState>>,
    kinds: HashMap<String, (Kind, Arc<str>)>,
    pub topic: Arc<str>,
    pub group: Arc<str>,
    commit_lock: tokio::sync::Mutex<()>,
    /// A background commit is on its way (later settlements ride along).
    commit_queued: AtomicBool,
    /// Commit the record of deliveries before handing them out.
    record_first: bool,
    /// How far past what was handed out a delivery record claims, per
    /// partition: the largest receive so far (a worker's first receive asks
    /// for its whole capacity).
    ahead: AtomicI64,
    /// A commit that moves the record ahead is on its way.
    record_queued: AtomicBool,
    closed: AtomicBool,
    /// Admitted by the reading task, waiting for a receive.
    ready: Mutex<Ready>,
    /// Something arrived in `ready`.
    arrived: Notify,
    /// A receive took from `ready`: there may be room to read on.
    room_freed: Notify,
    /// How many admitted deliveries may wait in `ready`: `READ_AHEAD`
    /// times the largest receive so far (nothing is read before the first
    /// receive).
    room: AtomicUsize,
    /// The reading task, once started.
    reading: Mutex<Option<JoinHandle<()>>>,
    /// Stops the reading task.
    stop: CancellationToken,
    /// Deliveries the worker is finished with, for the reading task that
    /// allocated them to reuse (`Spares`) or free (see `Broker::dispose`:
    /// freeing there was +3-5% consuming a backlog with glibc's malloc,
    /// reusing +12% more). Their receipts hold this reader: emptied when
    /// the task stops, so the cycle never outlives it.
    finished: Mutex<Vec<Delivery>>,
}

/// What the reading task leaves for the next receive.
#[derive(Default)]
struct Ready {
    deliveries: VecDeque<Delivery>,
    /// An error it met, reported once there is nothing else to take.
    error: Option<Error>,
}

impl Reader {
    /// Joins the group `group` for `topic` (its delay and retry topics exist already).
    pub fn new(options: &Options, topic: &str, group: &str, consumer_name: &str) -> Result<Reader> {
        let state = Arc::new(Mutex::new(ReaderState::default()));
        let eager = options.assignment != "cooperative-sticky";
        state.lock().unwrap().eager = eager;
        let context = ReaderContext { state: Arc::clone(&state), revoke_wait: options.revoke_wait };
        let mut config = options.client_config();
        config
            .set("group.id", consumer_group(topic, group))
            .set("client.id", consumer_name)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("partition.assignment.strategy", options.assignment)
            // Commits share the broker connection with fetches and wait
            // behind a fetch's long poll: keep that poll short.
            .set("fetch.wait.max.ms", "10")
            // Once its local queue passed librdkafka's thresholds, the next
            // fetch waited 1 s by default, long after a fast consumer had
            // drained the queue: half a second idle every 120,000 messages.
            .set("fetch.queue.backoff.ms", "10")
            .set("session.timeout.ms", options.session_timeout.as_millis().to_string())
            // A rebalance waits for every member's next heartbeat, twice
            // with the cooperative protocol: librdkafka's 3 s made a join
            // take 5 s or more.
            .set("heartbeat.interval.ms", heartbeat_interval(options.session_timeout).as_millis().to_string())
            .set("max.poll.interval.ms", options.max_poll_interval.as_millis().to_string());
        let consumer: StreamConsumer<ReaderContext> = config.create_with_context(context).map_err(err)?;
        let mut kinds = HashMap::new();
        let mut add = |name: String, kind: Kind| {
            let shared: Arc<str> = Arc::from(name.as_str());
            kinds.insert(name, (kind, shared));
        };
        add(topic.to_string(), Kind::Main);
        for level in LEVELS {
            add(delay_topic(topic, level), Kind::Delay(level));
            add(retry_topic(topic, group, level), Kind::Retry(level));
        }
        state.lock().unwrap().names =
            kinds.iter().map(|(name, (_, shared))| (name.clone(), Arc::clone(shared))).collect();
        let names: Vec<&str> = kinds.keys().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(err)?;
        Ok(Reader {
            consumer,
            state,
            kinds,
            topic: Arc::from(topic),
            group: Arc::from(group),
            commit_lock: tokio::sync::Mutex::new(()),
            commit_queued: AtomicBool::new(false),
            record_first: options.record_deliveries_first,
            ahead: AtomicI64::new(0),
            record_queued: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            ready: Mutex::new(Ready::default()),
            arrived: Notify::new(),
            room_freed: Notify::new(),
            room: AtomicUsize::new(0),
            reading: Mutex::new(None),
            stop: CancellationToken::new(),
            finished: Mutex::new(Vec::new()),
        })
    }

    /// Receives up to `max` deliveries, waiting up to `wait` for the first.
    /// Hands nothing out before the group's record of it is committed.
    ///
    /// The reading task (started by the first receive) reads, decodes and
    /// admits messages while the worker handles the previous batch: a
    /// receive takes what it admitted.
    pub async fn receive(self: &Arc<Self>, outbox: &Outbox, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.room.fetch_max(max.saturating_mul(READ_AHEAD), Ordering::Relaxed);
        self.start_reading(outbox);
        finish_revocation(&self.consumer, &self.state, false);
        let deadline = tokio::time::Instant::now() + wait;
        let out = loop {
            // Listening before looking: what arrives after the look wakes us.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let taken = {
                let mut ready = self.ready.lock().unwrap();
                if ready.deliveries.is_empty() {
                    if let Some(e) = ready.error.take() {
                        return Err(e);
                    }
                    None
                } else {
                    let n = max.min(ready.deliveries.len());
                    Some(ready.deliveries.drain(..n).collect::<Vec<_>>())
                }
            };
            if let Some(taken) = taken {
                self.room_freed.notify_one();
                let out = self.keep_held(taken);
                if !out.is_empty() {
                    break out;
                }
                continue;
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                break Vec::new();
            }
        };
        // The record of what was handed out: a crash from here on counts.
        if out.is_empty() {
            // Idle: a good moment to retry a commit that failed earlier.
            self.commit_soon();
            return Ok(out);
        }
        if !self.record_first {
            self.commit_soon();
            return Ok(out);
        }
        // The record runs ahead of what is handed out, so most batches are
        // covered already and only move it on in the background; a batch
        // past it waits for the commit. The price: after a crash, messages
        // claimed and never handed out count one attempt more (as a read
        // does on Redis, or a prefetched message on RabbitMQ).
        let ahead = i64::try_from(max).unwrap_or(i64::MAX / RECORD_AHEAD) * RECORD_AHEAD;
        let ahead = self.ahead.fetch_max(ahead, Ordering::Relaxed).max(ahead);
        let (covered, running_low) = {
            let mut st = self.state.lock().unwrap();
            st.parts
                .values_mut()
                .map(|t| t.check_record(ahead))
                .fold((true, false), |(c, l), (tc, tl)| (c && tc, l || tl))
        };
        if !covered {
            if let Err(e) = self.commit().await {
                tracing::warn!(error = %e, "could not record deliveries; a crash now would not count as an attempt");
            }
        } else if running_low {
            self.record_ahead();
        }
        Ok(out)
    }

    /// Of deliveries admitted earlier, those still this consumer's to hand
    /// out. The rest are withdrawn: their partition went away or is being
    /// given up meanwhile (they come again to whoever reads it next).
    fn keep_held(&self, admitted: Vec<Delivery>) -> Vec<Delivery> {
        fn receipt(d: &Delivery) -> (&Arc<str>, i32, u64) {
            let r = d.receipt_as::<KafkaReceipt>(BACKEND).expect("admitted by this reader");
            (&r.topic, r.partition, r.epoch)
        }
        let mut st = self.state.lock().unwrap();
        let mut kept = Vec::with_capacity(admitted.len());
        let mut rest = admitted;
        while !rest.is_empty() {
            let n = run_len(&rest, receipt);
            let tail = rest.split_off(n);
            let (topic, partition, epoch) = receipt(&rest[0]);
            let part: Part = (Arc::clone(topic), partition);
            if st.revoking.contains(&part) {
                st.withdraw(&rest);
            } else if st.assigned(topic, partition, epoch).is_some() {
                kept.append(&mut rest);
            }
            rest = tail;
        }
        kept
    }

    /// Starts the reading task once.
    fn start_reading(self: &Arc<Self>, outbox: &Outbox) {
        let mut task = self.reading.lock().unwrap();
        if task.is_none() && !self.closed.load(Ordering::SeqCst) {
            *task = Some(tokio::spawn(Arc::clone(self).read(outbox.clone())));
        }
    }

    /// The reading task: reads what there is room for (`READ_AHEAD` times
    /// what the largest receive asked for, minus what waits already),
    /// admits it, and leaves it for the next receives; until the reader
    /// closes. It alone reads from the consumer, so rebalance callbacks,
    /// pauses and seeks happen between its reads, never during one.
    async fn read(self: Arc<Self>, outbox: Outbox) {
        self.read_until_stopped(&outbox).await;
        // Ended (stopped, or the consumer closed): from now on, disposed
        // deliveries are dropped at once.
        self.stop.cancel();
        // Whatever no receive will take now is withdrawn (the close that
        // stopped this task commits without it).
        self.withdraw_ready();
    }

    async fn read_until_stopped(self: &Arc<Self>, outbox: &Outbox) {
        let mut kinds = KindCache::default();
        // Kept from read to read: allocated afresh (tens of kilobytes each
        // time), they made the allocator consolidate its free lists per read.
        let (mut incoming, mut decided, mut admitted) = (Vec::new(), Vec::new(), Vec::new());
        let mut backoff = Duration::from_millis(100);
        let mut finished = Vec::new();
        let mut spares = Spares::default();
        while !self.stop.is_cancelled() {
            // Recycled or freed here, outside the lock.
            std::mem::swap(&mut finished, &mut *self.finished.lock().unwrap());
            spares.recycle(&mut finished);
            // A rebalance (served inside the last read) may be giving up
            // partitions some waiting deliveries came from.
            self.withdraw_revoked();
            finish_revocation(&self.consumer, &self.state, false);
            let room_freed = self.room_freed.notified();
            tokio::pin!(room_freed);
            room_freed.as_mut().enable();
            let room = self.room.load(Ordering::Relaxed).saturating_sub(self.ready.lock().unwrap().deliveries.len());
            if room == 0 {
                tokio::select! {
                    _ = room_freed => continue,
                    // The lease keeper's tick may complete a revocation meanwhile.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = self.stop.cancelled() => return,
                }
            }
            // Wake for a paused partition's head, and every second for a
            // revocation's deadline.
            let now = Instant::now();
            let wake = self.resume_due().map_or(now + Duration::from_secs(1), |w| w.min(now + Duration::from_secs(1)));
            let mut messages = self.consumer.stream();
            let first = tokio::select! {
                first = tokio::time::timeout(wake.saturating_duration_since(now), messages.next()) => first,
                _ = self.stop.cancelled() => return,
            };
            let first = match first {
                Err(_) => continue,
                Ok(Some(Ok(m))) => m,
                Ok(None) => {
                    self.report(Error::Closed);
                    return;
                }
                Ok(Some(Err(e))) => {
                    self.report(err(e));
                    drop(messages);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            // Then what is already here, up to the room.
            incoming.clear();
            incoming.reserve(room.min(1024));
            let mut next = Some(first);
            while let Some(m) = next.take() {
                if let Some((kind, topic)) = kinds.get(m.topic(), &self.kinds) {
                    incoming.push(Incoming::copy(&m, kind, topic, &mut spares));
                }
                drop(m);
                if incoming.len() < room {
                    next = match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => Some(m),
                        _ => None,
                    };
                }
            }
            drop(messages);
            let result = self.admit(&mut incoming, &mut decided, outbox, &mut admitted, &mut spares).await;
            let mut ready = self.ready.lock().unwrap();
            ready.deliveries.extend(admitted.drain(..));
            if let Err(e) = result {
                ready.error.get_or_insert(e);
            }
            drop(ready);
            self.arrived.notify_one();
        }
    }

    /// Takes deliveries the worker is finished with, for the reading task
    /// to free; once it has stopped, they are dropped at once.
    pub fn dispose(&self, mut deliveries: Vec<Delivery>) {
        let mut finished = self.finished.lock().unwrap();
        // Checked under the lock `withdraw_ready` empties the list under,
        // after the stop: nothing is left behind in it.
        if !self.stop.is_cancelled() {
            finished.append(&mut deliveries);
        }
        drop(finished);
        drop(deliveries);
    }

    /// Leaves an error for the next receive.
    fn report(&self, e: Error) {
        self.ready.lock().unwrap().error.get_or_insert(e);
        self.arrived.notify_one();
    }

    /// Stops the reading task and withdraws what it admitted and no receive
    /// took: it was never handed out, and comes again.
    async fn stop_reading(&self) {
        self.abandon();
        let task = self.reading.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.withdraw_ready();
    }

    /// Withdraws waiting deliveries of partitions being given up, so the
    /// revocation need not wait for them.
    fn withdraw_revoked(&self) {
        let revoking = {
            let st = self.state.lock().unwrap();
            if st.revoking.is_empty() {
                return;
            }
            st.revoking.clone()
        };
        let withdrawn: VecDeque<Delivery> = {
            let mut ready = self.ready.lock().unwrap();
            let (gone, kept) = std::mem::take(&mut ready.deliveries).into_iter().partition(|d| {
                d.receipt_as::<KafkaReceipt>(BACKEND)
                    .is_ok_and(|r| revoking.iter().any(|p| p.1 == r.partition && p.0 == r.topic))
            });
            ready.deliveries = kept;
            gone
        };
        self.state.lock().unwrap().withdraw(&withdrawn);
    }

    /// Stops the reading task without waiting for it (the broker was dropped
    /// without being closed): it withdraws what it admitted as it ends.
    pub fn abandon(&self) {
        self.stop.cancel();
        self.withdraw_ready();
        // A receive waiting for the task sees the reader closed now.
        self.arrived.notify_waiters();
    }

    /// Withdraws what waits for a receive, and frees what waits to be
    /// freed (also breaks the cycle of their receipts holding this reader).
    fn withdraw_ready(&self) {
        let waiting = std::mem::take(&mut self.ready.lock().unwrap().deliveries);
        self.state.lock().unwrap().withdraw(&waiting);
        drop(std::mem::take(&mut *self.finished.lock().unwrap()));
    }

    /// Resumes partitions whose head is due; returns the next wake-up.
    fn resume_due(&self) -> Option<Instant> {
        let now = SystemTime::now();
        let mut due = TopicPartitionList::new();
        let mut next: Option<Instant> = None;
        {
            let mut st = self.state.lock().unwrap();
            st.paused.retain(|(topic, partition), wake| {
                if *wake <= now {
                    due.add_partition(topic, *partition);
                    false
                } else {
                    let at = Instant::now() + wake.duration_since(now).unwrap_or_default();
                    next = Some(next.map_or(at, |n| n.min(at)));
                    true
                }
            });
        }
        if due.count() > 0 {
            if let Err(e) = self.consumer.resume(&due) {
                tracing::warn!(error = %e, "could not resume partitions");
            }
        }
        next
    }

    /// Decides what to do with each message, in order: hand it out (into
    /// `out`), move it on, or pause its partition until it is due. The
    /// state is looked at once for a run of messages, not once each (the
    /// acker settles under the same lock), and left while a waiting message
    /// is moved on or its partition paused.
    async fn admit(
        self: &Arc<Self>,
        incoming: &mut Vec<Incoming>,
        decided: &mut Vec<Admission>,
        outbox: &Outbox,
        out: &mut Vec<Delivery>,
        spares: &mut Spares,
    ) -> Result<()> {
        // Decided in place (messages are large: not moved more than once).
        decided.clear();
        while decided.len() < incoming.len() {
            self.state.lock().unwrap().admit_all(&incoming[decided.len()..], decided);
            if let Some(Admission::NotDue) = decided.last() {
                self.wait_for_due(&incoming[decided.len() - 1], outbox).await?;
            }
        }
        out.extend(incoming.drain(..).zip(decided.drain(..)).filter_map(|(m, admission)| match admission {
            Admission::HandOut { earlier, epoch } => Some(self.delivery(m, earlier, epoch, spares)),
            Admission::Stale | Admission::NotDue => None,
        }));
        Ok(())
    }

    /// The delivery of a message handed out in `epoch`, delivered `earlier`
    /// times before this assignment.
    fn delivery(self: &Arc<Self>, m: Incoming, earlier: u32, epoch: u64, spares: &mut Spares) -> Delivery {
        // Decoded as a first delivery, in the `Arc` only this reader holds
        // (`make_mut` copies nothing): the earlier ones are added here.
        let (mut message, malformed) = match m.body {
            Body::Decoded { message, malformed } => (message, malformed),
            Body::Wire { headers, payload } => {
                let decoded = wire::decode(headers, payload, 1);
                (Arc::new(decoded.message), decoded.malformed)
            }
        };
        let first = Arc::make_mut(&mut message);
        first.attempt = first.attempt.saturating_add(earlier);
        if first.key.is_none() {
            first.key = m.key.map(|k| String::from_utf8_lossy(&k).into_owned());
        }
        if first.published_at == SystemTime::UNIX_EPOCH {
            if let Some(ts) = m.timestamp_ms.filter(|t| *t >= 0) {
                first.published_at = from_millis(ts as u64);
            }
        }
        let receipt =
            KafkaReceipt { reader: Arc::clone(self), topic: m.topic, partition: m.partition, offset: m.offset, epoch };
        Delivery::new(Arc::clone(&self.topic), Arc::clone(&self.group), message, malformed, spares.receipt(receipt))
    }

    /// A waiting message at the head of its partition that is not due:
    /// moves it on if it waited its level's time, else pauses the
    /// partition until it is due.
    async fn wait_for_due(&self, m: &Incoming, outbox: &Outbox) -> Result<()> {
        let part: Part = (Arc::clone(&m.topic), m.partition);
        let level = match m.kind {
            Kind::Delay(level) | Kind::Retry(level) => level,
            Kind::Main => return Ok(()),
        };
        let due = m.deliver_at_ms().unwrap_or(0);
        let Body::Wire { headers, payload } = &m.body else { return Ok(()) };
        let now = to_millis(SystemTime::now());
        let waited = m.timestamp_ms.map_or(u64::MAX, |ts| (ts.max(0) as u64).saturating_add(level));
        let mut wake = if level == 0 { due } else { due.min(waited) };
        if level > 0 && now >= waited {
            // Waited its level's time: on to the level that fits what remains.
            let target = retry_topic(&self.topic, &self.group, level_for(due.saturating_sub(now)));
            match outbox.send(&target, m.key.as_deref(), headers, payload).await {
                Ok(()) => {
                    let mut st = self.state.lock().unwrap();
                    if let Some(t) = st.parts.get_mut(&part) {
                        t.outstanding.insert(m.offset, true);
                        t.next = Some(t.next.map_or(m.offset + 1, |n| n.max(m.offset + 1)));
                    }
                    return Ok(());
                }
                // It stays where it is and is looked at again in a second;
                // what else this receive read is handed out meanwhile.
                Err(e) => {
                    tracing::warn!(error = %e, topic = %target, "could not move a waiting message on; trying again in 1 s");
                    wake = now + 1_000;
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&m.topic, m.partition);
        self.consumer.pause(&tpl).map_err(err)?;
        self.consumer.seek(&m.topic, m.partition, Offset::Offset(m.offset), Duration::ZERO).map_err(err)?;
        self.state.lock().unwrap().paused.insert(part, from_millis(wake));
        Ok(())
    }

    /// Whether the delivery is still this consumer's to settle.
    pub fn holds(&self, r: &KafkaReceipt) -> bool {
        let st = self.state.lock().unwrap();
        st.parts
            .get(&(Arc::clone(&r.topic), r.partition))
            .is_some_and(|t| t.epoch == r.epoch && t.outstanding.get(r.offset) == Some(false))
    }

    /// Marks the delivery settled; false when it was not held.
    pub fn settle(&self, r: &KafkaReceipt) -> bool {
        self.state.lock().unwrap().settle_all(&[r]).is_none()
    }

    /// Marks deliveries settled under one look at the state; returns the
    /// position of the first that was not held.
    pub fn settle_all(&self, receipts: &[&KafkaReceipt]) -> Option<usize> {
        self.state.lock().unwrap().settle_all(receipts)
    }

    /// Commits every partition whose commit point or delivery record moved.
    /// A failed commit (a rebalance in progress) stays pending and is tried
    /// again by the next call.
    pub async fn commit(self: &Arc<Self>) -> Result<()> {
        let _one_at_a_time = self.commit_lock.lock().await;
        let mut tpl = TopicPartitionList::new();
        let mut wanted = Vec::new();
        {
            let mut st = self.state.lock().unwrap();
            // Leaving: the record says exactly what was handed out.
            let ahead = if self.closed.load(Ordering::SeqCst) { 0 } else { self.ahead.load(Ordering::Relaxed) };
            for (part, t) in st.parts.iter_mut() {
                if let Some(w) = t.wanted(ahead) {
                    add_commit(&mut tpl, part, w.commit.0, w.commit.1.clone());
                    wanted.push((part.clone(), t.epoch, w));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || this.consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| Error::Backend { backend: BACKEND, reason: e.to_string() })?;
        result.map_err(err)?;
        let mut st = self.state.lock().unwrap();
        for (part, epoch, done) in wanted {
            if let Some(t) = st.parts.get_mut(&part).filter(|t| t.epoch == epoch) {
                t.committed = Some(done.commit);
                t.recorded_through = done.claim;
            }
        }
        drop(st);
        finish_revocation(&self.consumer, &self.state, false);
        Ok(())
    }

    /// Commits in the background; calls made while one is queued share it.
    pub fn commit_soon(self: &Arc<Self>) {
        if self.commit_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Settlements of the next few milliseconds share this commit.
            tokio::time::sleep(COMMIT_LINGER).await;
            this.commit_queued.store(false, Ordering::SeqCst);
            if let Err(e) = this.commit().await {
                tracing::debug!(error = %e, "commit failed; retried with the next one");
            }
        });
    }

    /// Moves the delivery record ahead in the background, at once.
    fn record_ahead(self: &Arc<Self>) {
        if self.record_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.record_queued.store(false, Ordering::SeqCst);
            if let Err(e) = this.commit().await {
                tracing::debug!(error = %e, "commit failed; retried with the next one");
            }
        });
    }

    /// Completes a revocation whose deadline passed (called on every tick).
    pub fn tick(&self) {
        finish_revocation(&self.consumer, &self.state, false);
    }

    /// Leaves the group: commits what is settled, gives everything up.
    pub async fn close(self: &Arc<Self>) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop_reading().await;
        if let Err(e) = self.commit().await {
            tracing::warn!(error = %e, "final commit failed; settled messages may come again");
        }
        self.state.lock().unwrap().closing = true;
        self.consumer.unsubscribe();
        // The revocation is served by polling; whatever still arrives was
        // never handed out and stays uncommitted, for the next owner.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.consumer.assignment().map_or(0, |a| a.count()) > 0 {
            let _ = tokio::time::timeout(Duration::from_millis(50), self.consumer.recv()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_count_each_handing_out() {
        let none = Marks::default();
        assert_eq!(none.count_at(5), 0);
        let once = none.with_prefix(7);
        assert_eq!(once.encode(), "pb1:7:1");
        assert_eq!((once.count_at(3), once.count_at(7), once.count_at(8)), (1, 1, 0));
        let parsed = Marks::parse(&once.encode());
        assert_eq!(parsed, once);
        // A second consumer got as far as 4 before it too died.
        let twice = parsed.with_prefix(4);
        assert_eq!(twice.encode(), "pb1:4:2,7:1");
        assert_eq!((twice.count_at(4), twice.count_at(5)), (2, 1));
        // Committing past 4 forgets what no longer matters.
        assert_eq!(twice.from(5).encode(), "pb1:7:1");
        assert_eq!(Marks::parse("something else"), Marks::default());
        assert_eq!(Marks::parse("pb1:x:1"), Marks::default());
    }

    #[test]
    fn marks_stay_small() {
        let mut m = Marks::default();
        for t in (0..100).rev() {
            m = m.with_prefix(t);
        }
        let kept = m.from(0);
        assert!(kept.0.len() <= MAX_MARKS);
        assert_eq!(kept.count_at(0), 100);
        assert!(kept.encode().len() < 400);
    }

    #[test]
    fn commit_point_is_the_lowest_unsettled() {
        let mut t = Track::new(1, Some(10), "");
        assert_eq!(t.wanted(0), None);
        for o in 10..14 {
            t.outstanding.insert(o, false);
            t.handed_through = Some(o);
            t.next = Some(o + 1);
        }
        assert!(t.outstanding.settle(11));
        assert!(t.outstanding.settle(12));
        let commit = |t: &mut Track| t.wanted(0).map(|w| w.commit);
        assert_eq!(commit(&mut t), Some((10, "pb1:13:1".to_string())));
        assert!(t.outstanding.settle(10));
        assert_eq!(commit(&mut t), Some((13, "pb1:13:1".to_string())));
        assert!(t.outstanding.settle(13));
        assert_eq!(commit(&mut t), Some((14, String::new())));
    }

    #[test]
    fn the_record_runs_ahead_of_what_is_handed_out() {
        let mut t = Track::new(1, Some(10), "pb1:11:2");
        // Nothing handed out: nothing to record, nothing to wait for.
        assert_eq!(t.check_record(4), (true, false));
        t.outstanding.insert(10, false);
        t.handed_through = Some(10);
        t.next = Some(11);
        assert_eq!(t.check_record(4), (false, true), "handed out, not recorded");
        let w = t.wanted(4).unwrap();
        // Offsets 10..=14 claimed once more; 10 and 11 had two deliveries before.
        assert_eq!(w, Wanted { commit: (10, "pb1:11:3,14:1".to_string()), claim: Some(14) });
        t.committed = Some(w.commit);
        t.recorded_through = w.claim;
        assert_eq!(t.wanted(4), None, "nothing moved");
        assert_eq!(t.check_record(4), (true, false));
        for o in 11..14 {
            t.outstanding.insert(o, false);
            t.handed_through = Some(o);
        }
        assert_eq!(t.check_record(4), (true, true), "covered, but less than half a receive ahead");
        // Giving the partition up records exactly what was handed out.
        assert_eq!(t.wanted(0).unwrap().commit, (10, "pb1:11:3,13:1".to_string()));
    }

    /// An empty main-topic message read at `offset` of `topic[partition]`.
    fn incoming(topic: &Arc<str>, partition: i32, offset: i64) -> Incoming {
        Incoming {
            kind: Kind::Main,
            topic: Arc::clone(topic),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            body: Body::Decoded {
                message: Arc::new(wire::decode(Vec::<(String, String)>::new(), Bytes::new(), 1).message),
                malformed: None,
            },
        }
    }

    /// Disposed deliveries (their receipts hold the reader) are taken by
    /// the reading task, which keeps their allocations for the messages it
    /// reads next, and dropped at once once it stopped: no cycle outlives it.
    #[tokio::test]
    async fn disposed_deliveries_are_reused_and_do_not_keep_the_reader() {
        let options = Options::from_url(&crate::url::BrokerUrl::parse("kafka://127.0.0.1:1").unwrap()).unwrap();
        let outbox = Outbox::new(&options).unwrap();
        let reader = Arc::new(Reader::new(&options, "t", "g", "c").unwrap());
        let topic: Arc<str> = Arc::from("t");
        let batch = |from: i64| -> Vec<Delivery> {
            let mut spares = Spares::default();
            (from..from + 3).map(|o| reader.delivery(incoming(&topic, 0, o), 0, 1, &mut spares)).collect()
        };
        reader.dispose(batch(0));
        assert_eq!(Arc::strong_count(&reader), 4, "held for the reading task");
        // The reading task (it holds the reader too) takes them on its next
        // turn and keeps their receipts as spares: still three, not more.
        // (It recycles them before it next waits, and this test's runtime
        // has one thread: once they are taken, they are recycled.)
        reader.start_reading(&outbox);
        let deadline = Instant::now() + Duration::from_secs(5);
        while reader.finished.lock().unwrap().len() == 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(Arc::strong_count(&reader), 5, "the task and three spare receipts");
        reader.dispose(batch(3));
        reader.stop_reading().await;
        assert_eq!(Arc::strong_count(&reader), 1, "spares and whatever waited are dropped when the task stops");
        reader.dispose(batch(6));
        assert_eq!(Arc::strong_count(&reader), 1, "dropped at once after it stopped");
    }

    /// Only what nothing else holds is reused (a handler may keep its
    /// message), and a reused message decodes as a new one would.
    #[tokio::test]
    async fn spares_are_what_only_finished_deliveries_held() {
        let options = Options::from_url(&crate::url::BrokerUrl::parse("kafka://127.0.0.1:1").unwrap()).unwrap();
        let reader = Arc::new(Reader::new(&options, "t", "g", "c").unwrap());
        let topic: Arc<str> = Arc::from("t");
        let mut spares = Spares::default();
        let mut finished: Vec<Delivery> =
            (0..2).map(|o| reader.delivery(incoming(&topic, 0, o), 0, 1, &mut spares)).collect();
        let kept = Arc::clone(&finished[0].message);
        let reusable = Arc::as_ptr(&finished[1].message);
        spares.recycle(&mut finished);
        assert!(finished.is_empty());
        assert_eq!((spares.messages.len(), spares.receipts.len()), (1, 2));
        let fields = || [(wire::ID, std::borrow::Cow::Borrowed("0190b0e2-8a4c-7cc0-9a5e-5c2f3f6a0b1c"))];
        let (message, malformed) = spares.decode(fields(), Bytes::from_static(b"next"));
        assert!(malformed.is_none());
        assert_eq!(Arc::as_ptr(&message), reusable, "the spare message is reused");
        assert_eq!(*message, wire::decode(fields(), Bytes::from_static(b"next"), 1).message);
        assert_eq!(Arc::strong_count(&kept), 1, "the message a handler kept is its own");
        let receipt = spares.receipt(KafkaReceipt {
            reader: Arc::clone(&reader),
            topic: Arc::clone(&topic),
            partition: 2,
            offset: 7,
            epoch: 3,
        });
        let r = receipt.get::<KafkaReceipt>().unwrap();
        assert_eq!((r.partition, r.offset, r.epoch, spares.receipts.len()), (2, 7, 3, 1));
    }

    #[test]
    fn only_assigned_partitions_are_admitted() {
        let topic: Arc<str> = Arc::from("t");
        let message = |partition: i32, offset: i64| incoming(&topic, partition, offset);
        let mut st = ReaderState::default();
        st.parts.insert((Arc::clone(&topic), 0), Track::new(7, Some(5), ""));
        assert!(matches!(st.admit(&message(0, 5)), Admission::HandOut { earlier: 0, epoch: 7 }));
        assert!(matches!(st.admit(&message(0, 5)), Admission::Stale), "handed out already");
        // Read before partition 1 was given up: someone else's now, and a
        // commit for it would move their offset.
        assert!(matches!(st.admit(&message(1, 0)), Admission::Stale));
        assert!(!st.parts.contains_key(&(Arc::clone(&topic), 1)));
    }

    #[test]
    fn a_read_is_decided_run_by_run_in_order() {
        let (main, other): (Arc<str>, Arc<str>) = (Arc::from("t"), Arc::from("u"));
        let mut st = ReaderState::default();
        st.parts.insert((Arc::clone(&main), 0), Track::new(1, Some(0), ""));
        st.parts.insert((Arc::clone(&main), 1), Track::new(2, Some(0), ""));
        st.parts.insert((Arc::clone(&other), 0), Track::new(3, Some(0), ""));
        st.paused.insert((Arc::clone(&main), 1), SystemTime::now());
        let read = [
            incoming(&main, 0, 0),
            incoming(&main, 0, 1),
            incoming(&main, 1, 0), // paused: comes again
            incoming(&other, 0, 0),
            incoming(&main, 0, 2),
            incoming(&main, 0, 1), // handed out already
            incoming(&main, 2, 0), // not assigned here
        ];
        let mut decided = Vec::new();
        st.admit_all(&read, &mut decided);
        let got: Vec<Option<u64>> = decided
            .iter()
            .map(|a| match a {
                Admission::HandOut { epoch, .. } => Some(*epoch),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![Some(1), Some(1), None, Some(3), Some(1), None, None]);
        assert_eq!(st.parts[&(Arc::clone(&main), 0)].handed_through, Some(2));
        assert_eq!(st.parts[&(Arc::clone(&main), 1)].handed_through, None);
    }

    #[test]
    fn withdrawn_offsets_are_neither_recorded_nor_committed() {
        let mut t = Track::new(1, Some(10), "");
        for o in 10..15 {
            t.outstanding.insert(o, false);
        }
        t.handed_through = Some(14);
        t.next = Some(15);
        // 10..=12 reached a handler, 13 and 14 waited for a receive.
        assert!(t.outstanding.settle(10));
        assert!(t.outstanding.settle(11));
        t.withdraw(13);
        t.withdraw(14);
        t.withdraw(11); // settled already: stays as it is
        assert_eq!(t.wanted(0).unwrap().commit, (12, "pb1:12:1".to_string()));
        assert!(t.outstanding.settle(12));
        // Everything handed out settled: the commit stops at the first withdrawn.
        assert_eq!(t.wanted(0).unwrap().commit, (13, String::new()));
    }

    #[test]
    fn a_partition_that_outruns_its_record_earns_a_longer_lead() {
        let mut t = Track::new(1, Some(0), "");
        let hand_out = |t: &mut Track, through: i64| {
            for o in t.next.unwrap()..=through {
                t.outstanding.insert(o, false);
            }
            t.handed_through = Some(through);
            t.next = Some(through + 1);
        };
        let record = |t: &mut Track, ahead: i64| {
            let w = t.wanted(ahead).unwrap();
            t.committed = Some(w.commit);
            t.recorded_through = w.claim;
        };
        hand_out(&mut t, 9);
        assert_eq!(t.check_record(10), (false, true), "the first hand-out is never covered");
        record(&mut t, 10);
        assert_eq!(t.recorded_through, Some(19), "the usual lead");
        hand_out(&mut t, 14);
        assert_eq!(t.check_record(10), (true, false));
        hand_out(&mut t, 15);
        assert_eq!(t.check_record(10), (true, true), "less than half the lead left");
        hand_out(&mut t, 29);
        assert_eq!(t.check_record(10), (false, true), "outran the record");
        record(&mut t, 10);
        assert_eq!(t.recorded_through, Some(49), "twice the lead");
        for through in [79, 150, 300, 500, 1000] {
            hand_out(&mut t, through);
            assert!(!t.check_record(10).0);
            record(&mut t, 10);
        }
        assert_eq!(t.recorded_through, Some(1320), "at most {MAX_LEAD_GROWTH} times the usual lead");
        // Giving the partition up still records exactly what was handed out.
        assert_eq!(t.wanted(0).unwrap().claim, Some(1000));
    }
}
