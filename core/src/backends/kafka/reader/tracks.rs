//! One assigned partition's bookkeeping (`Track`): what was handed out and
//! settled, the commit it needs (`Wanted`), how far its delivery record
//! runs ahead, and what to do with a message just read (`Admission`).
//! Separate from the reader: plain state, no consumer, tested on its own.

use std::sync::Arc;
use std::time::SystemTime;

use super::incoming::Incoming;
use super::marks::Marks;
use super::Kind;
use crate::backends::kafka::outstanding::Outstanding;
use crate::message::to_millis;

/// A commit a partition needs: offset and metadata, and the offset its
/// delivery record claims.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Wanted {
    pub(super) commit: (i64, String),
    pub(super) claim: Option<i64>,
}

/// One assigned partition.
#[derive(Debug)]
pub(super) struct Track {
    pub(super) epoch: u64,
    /// Deliveries before this assignment (from the commit metadata).
    base: Marks,
    /// Highest offset this consumer handed out.
    pub(super) handed_through: Option<i64>,
    /// Highest offset the last committed delivery record claims: up to
    /// `RECORD_AHEAD` receives' worth past `handed_through` (or this
    /// partition's `lead`), so that handing out rarely waits for a commit.
    pub(super) recorded_through: Option<i64>,
    /// The lead this partition earned by outrunning its record (0: none).
    lead: i64,
    /// One past the highest offset handed out or settled here.
    pub(super) next: Option<i64>,
    /// Handed out and not yet committed: settled (true) or not (false).
    pub(super) outstanding: Outstanding,
    /// The last commit that succeeded.
    pub(super) committed: Option<(i64, String)>,
}

/// How far a partition's lead may grow, in multiples of `RECORD_AHEAD`
/// receives: its handlers outran the record (librdkafka hands a fetched
/// partition out in bursts of thousands), so it leads by twice as much.
/// The record moves on every half lead: at 8 a fast consumer committed ten
/// times as often as with the record in the background (and every lead
/// doubling made a receive wait for a commit); 32 halves that (+10-25%
/// consuming a backlog). The price stays what a lead costs: after a crash,
/// messages claimed and never handed out count one attempt more.
pub(super) const MAX_LEAD_GROWTH: i64 = 32;

impl Track {
    pub(super) fn new(epoch: u64, committed: Option<i64>, metadata: &str) -> Track {
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
    pub(super) fn wanted(&mut self, ahead: i64) -> Option<Wanted> {
        let point = self.commit_point()?;
        let wanted = (point, self.marks(ahead).from(point).encode());
        (self.committed.as_ref() != Some(&wanted)).then_some(Wanted { commit: wanted, claim: self.claim(ahead) })
    }

    /// Whether everything handed out is in the committed record; and whether
    /// the record's lead has shrunk below half. Handlers that outran the
    /// record double this partition's lead (up to `MAX_LEAD_GROWTH` times
    /// `ahead`): a slow consumer keeps a short lead, a fast one stops waiting.
    pub(super) fn check_record(&mut self, ahead: i64) -> (bool, bool) {
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
    pub(super) fn withdraw(&mut self, offset: i64) {
        if self.outstanding.remove(offset) == Some(false) {
            self.next = Some(self.next.map_or(offset, |n| n.min(offset)));
            self.handed_through = self.handed_through.map(|h| h.min(offset - 1));
        }
    }

    pub(super) fn unsettled(&self) -> bool {
        self.outstanding.any_unsettled()
    }
}

impl Track {
    /// Decides about one message of this partition and, when it is handed
    /// out, records it.
    pub(super) fn admit(&mut self, m: &Incoming) -> Admission {
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

/// What to do with a message just read.
pub(super) enum Admission {
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
pub(super) fn run_len<T>(items: &[T], key: impl Fn(&T) -> (&Arc<str>, i32, u64)) -> usize {
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
