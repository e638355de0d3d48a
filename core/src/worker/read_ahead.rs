//! How many messages a worker holds beyond its running handlers.
//!
//! An explicit `prefetch` is that many, always. Without one, where
//! consumers own whole partitions (Kafka) it is [`PARTITIONED_PREFETCH`]:
//! no other consumer could take those messages anyway. Elsewhere it
//! follows the handlers: the worker reads ahead what its handlers get
//! through in [`READ_AHEAD_TIME`] at the pace they have been finishing,
//! bounded by [`READ_AHEAD_COUNT`] messages and [`READ_AHEAD_BYTES`] of
//! payload. Quick handlers then get messages in batches (one receive round
//! trip per message held a default worker to a few thousand a second),
//! while handlers slower than that hold nothing extra: a long job never
//! waits on a busy worker while another worker is idle. Until a first
//! handler finishes, and again once none has for [`STALE`], nothing is
//! read ahead: the pace of handlers long gone says nothing of the next.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::options::PARTITIONED_PREFETCH;
use crate::broker::Delivery;

/// How much work (at the handlers' recent pace) a worker reads ahead by default.
pub const READ_AHEAD_TIME: Duration = Duration::from_millis(20);
/// Most messages a worker reads ahead by default: a receive then fetches
/// about a hundred (half of it), past which consuming stops getting faster.
pub const READ_AHEAD_COUNT: usize = 200;
/// Most payload bytes a worker reads ahead by default (estimated from the
/// mean size of what it received).
pub const READ_AHEAD_BYTES: usize = 1 << 20;

/// After this long without a handler finishing, the pace measured before
/// is forgotten.
const STALE: Duration = Duration::from_secs(1);

/// A worker's read-ahead: fixed, or measured from its handlers.
pub(super) struct ReadAhead {
    fixed: Option<usize>,
    concurrency: usize,
    /// The clock the last report is read against.
    since: Instant,
    /// When a handler last finished, in nanoseconds after `since`.
    last_handled: AtomicU64,
    /// Mean time a handler took (the whole policy around it), in
    /// nanoseconds; 0 until one finished.
    handler_nanos: AtomicU64,
    /// Mean payload size of what was received, in bytes.
    payload_bytes: AtomicU64,
}

impl ReadAhead {
    pub(super) fn new(concurrency: usize, prefetch: Option<usize>, owned_partitions: bool) -> Self {
        let fixed = prefetch.or(owned_partitions.then_some(PARTITIONED_PREFETCH));
        ReadAhead {
            fixed,
            concurrency,
            since: Instant::now(),
            last_handled: AtomicU64::new(0),
            handler_nanos: AtomicU64::new(0),
            payload_bytes: AtomicU64::new(0),
        }
    }

    /// Whether the read-ahead follows the handlers.
    pub(super) fn adapts(&self) -> bool {
        self.fixed.is_none()
    }

    /// The most it can ever be: what the worker's slots are sized for.
    pub(super) fn most(&self) -> usize {
        self.fixed.unwrap_or(READ_AHEAD_COUNT)
    }

    /// Messages to hold beyond the running handlers, now.
    pub(super) fn now(&self) -> usize {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        let nanos = self.handler_nanos.load(Ordering::Relaxed);
        let last = Duration::from_nanos(self.last_handled.load(Ordering::Relaxed));
        if nanos == 0 || self.since.elapsed().saturating_sub(last) > STALE {
            return 0;
        }
        let by_time = self.concurrency as u128 * READ_AHEAD_TIME.as_nanos() / u128::from(nanos);
        let by_bytes = READ_AHEAD_BYTES as u64 / self.payload_bytes.load(Ordering::Relaxed).max(1);
        (by_time.min(READ_AHEAD_COUNT as u128) as usize).min(by_bytes as usize)
    }

    /// `count` handlers finished in `took` between them.
    pub(super) fn handled(&self, count: u32, took: Duration) {
        if self.fixed.is_some() || count == 0 {
            return;
        }
        let sample = (took.as_nanos() / u128::from(count)).clamp(1, u128::from(u64::MAX)) as u64;
        mean_in(&self.handler_nanos, sample);
        self.last_handled.store(self.since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// A receive returned `deliveries`.
    pub(super) fn received(&self, deliveries: &[Delivery]) {
        if self.fixed.is_some() || deliveries.is_empty() {
            return;
        }
        let bytes: usize = deliveries.iter().map(|d| d.message.payload.len()).sum();
        mean_in(&self.payload_bytes, (bytes / deliveries.len()).max(1) as u64);
    }
}

/// Moves the running mean in `mean` a quarter of the way to `sample` (to
/// `sample` itself for the first), so a slow handler after quick ones
/// stops the read-ahead at once while one quick handler among slow ones
/// does not start it. Several handler loops report at once: an update
/// lost to a race is one sample fewer, which a mean can afford.
fn mean_in(mean: &AtomicU64, sample: u64) {
    let old = mean.load(Ordering::Relaxed);
    let new = if old == 0 { sample } else { (old as i128 + (sample as i128 - old as i128) / 4).max(1) as u64 };
    mean.store(new, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adaptive(concurrency: usize) -> ReadAhead {
        ReadAhead::new(concurrency, None, false)
    }

    #[test]
    fn an_explicit_prefetch_and_partition_owners_are_fixed() {
        let explicit = ReadAhead::new(4, Some(7), true);
        explicit.handled(1, Duration::from_secs(10));
        assert_eq!((explicit.now(), explicit.most(), explicit.adapts()), (7, 7, false));
        let partitions = ReadAhead::new(4, None, true);
        assert_eq!((partitions.now(), partitions.most()), (PARTITIONED_PREFETCH, PARTITIONED_PREFETCH));
    }

    #[test]
    fn nothing_is_read_ahead_before_a_handler_finishes() {
        assert_eq!(adaptive(1).now(), 0);
    }

    #[test]
    fn quick_handlers_read_ahead_up_to_the_count() {
        let read_ahead = adaptive(1);
        read_ahead.handled(8, Duration::from_micros(40));
        assert_eq!(read_ahead.now(), READ_AHEAD_COUNT);
    }

    #[test]
    fn the_read_ahead_is_the_work_of_read_ahead_time() {
        let read_ahead = adaptive(2);
        read_ahead.handled(1, Duration::from_millis(4));
        // Two handlers at 4 ms each get through 10 messages in 20 ms.
        assert_eq!(read_ahead.now(), 10);
    }

    #[test]
    fn handlers_slower_than_read_ahead_time_hold_nothing_extra() {
        let read_ahead = adaptive(1);
        read_ahead.handled(1, Duration::from_secs(1));
        assert_eq!(read_ahead.now(), 0);
    }

    #[test]
    fn one_slow_handler_after_quick_ones_stops_the_read_ahead() {
        let read_ahead = adaptive(1);
        for _ in 0..100 {
            read_ahead.handled(8, Duration::from_micros(40));
        }
        read_ahead.handled(1, Duration::from_secs(1));
        assert_eq!(read_ahead.now(), 0);
    }

    #[test]
    fn a_pace_from_long_ago_is_forgotten() {
        let read_ahead = adaptive(1);
        read_ahead.handled(8, Duration::from_micros(40));
        read_ahead.last_handled.store(0, Ordering::Relaxed);
        std::thread::sleep(STALE + Duration::from_millis(10));
        assert_eq!(read_ahead.now(), 0);
    }

    #[test]
    fn large_payloads_bound_the_read_ahead_in_bytes() {
        let read_ahead = adaptive(1);
        read_ahead.handled(1, Duration::from_micros(5));
        let big = crate::message::Message::new(vec![0u8; 100 * 1024]);
        let delivery = Delivery::new("t", "g", big, None, crate::broker::Receipt::new(()));
        read_ahead.received(&[delivery]);
        assert_eq!(read_ahead.now(), READ_AHEAD_BYTES / (100 * 1024));
    }
}
