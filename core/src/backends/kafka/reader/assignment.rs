//! Which partitions the reader holds, and how it gives them up: the state
//! shared with the rebalance callback (`ReaderState`), the callback itself
//! (`ReaderContext`), and the commit that completes a revocation.
//! Separate: the callback runs inside librdkafka's polls, not in the
//! reader's own calls, and both sides meet only in `ReaderState`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::incoming::{Incoming, KafkaReceipt};
use super::tracks::{run_len, Admission, Track, Wanted};
use super::Part;
use crate::backends::kafka::BACKEND;
use crate::broker::Delivery;
use crate::FastMap;

#[derive(Debug, Default)]
pub(super) struct ReaderState {
    /// Looked up a few times a message: hashed with ahash, not SipHash.
    pub(super) parts: FastMap<Part, Track>,
    /// Partitions whose head is not due, and when to look again.
    pub(super) paused: FastMap<Part, SystemTime>,
    /// Partitions the group took away, kept until what was handed out from
    /// them is settled or the deadline passes.
    pub(super) revoking: Vec<Part>,
    revoke_deadline: Option<Instant>,
    pub(super) closing: bool,
    /// The eager protocol: a rebalance takes every partition away and
    /// assigns anew (otherwise only the partitions that move).
    pub(super) eager: bool,
    next_epoch: u64,
    /// The subscribed topics' names, shared by every message and receipt.
    pub(super) names: HashMap<String, Arc<str>>,
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
    pub(super) fn admit_all(&mut self, messages: &[Incoming], decided: &mut Vec<Admission>) {
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
    pub(super) fn admit(&mut self, m: &Incoming) -> Admission {
        self.admitting(&m.topic, m.partition).map_or(Admission::Stale, |t| t.admit(m))
    }

    /// The partition's state, if it is still the assignment `epoch`.
    pub(super) fn assigned(&mut self, topic: &Arc<str>, partition: i32, epoch: u64) -> Option<&mut Track> {
        self.parts.get_mut(&(Arc::clone(topic), partition)).filter(|t| t.epoch == epoch)
    }

    /// Takes back deliveries admitted and never handed out (see `Track::withdraw`).
    pub(super) fn withdraw<'a>(&mut self, deliveries: impl IntoIterator<Item = &'a Delivery>) {
        for d in deliveries {
            let Ok(r) = d.receipt_as::<KafkaReceipt>(BACKEND) else { continue };
            if let Some(t) = self.assigned(&r.topic, r.partition, r.epoch) {
                t.withdraw(r.offset);
            }
        }
    }

    /// Marks deliveries settled; returns the position of the first that was
    /// not held (its partition went away, or it was settled already).
    pub(super) fn settle_all(&mut self, receipts: &[&KafkaReceipt]) -> Option<usize> {
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
pub(super) fn add_commit(tpl: &mut TopicPartitionList, part: &Part, offset: i64, metadata: String) {
    if tpl.add_partition_offset(&part.0, part.1, Offset::Offset(offset)).is_ok() {
        if let Some(mut e) = tpl.find_partition(&part.0, part.1) {
            e.set_metadata(metadata);
        }
    }
}

/// Gives up revoked partitions: commits what they settled, then lets the
/// group move them.
pub(super) fn finish_revocation<C: Consumer<ReaderContext>>(consumer: &C, state: &Mutex<ReaderState>, force: bool) {
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
pub(super) fn heartbeat_interval(session_timeout: Duration) -> Duration {
    (session_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(3))
}

/// Rebalance handling for a reader's consumer.
pub(super) struct ReaderContext {
    pub(super) state: Arc<Mutex<ReaderState>>,
    pub(super) revoke_wait: Duration,
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
