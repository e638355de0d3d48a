//! What a worker has done: [`WorkerStats`], counted as it goes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what a worker has done since it was created.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Deliveries received.
    pub received: u64,
    /// Handler successes (acked).
    pub succeeded: u64,
    /// Failures sent back to wait for a retry.
    pub retried: u64,
    /// Messages moved to the dead letters.
    pub dead_lettered: u64,
    /// Duplicates acked without running the handler (idempotency key done).
    pub duplicates: u64,
    /// Deliveries put back for later because another consumer held their key.
    pub deferred: u64,
    /// Deliveries handed back unstarted or unfinished at shutdown.
    pub released: u64,
    /// Settlements the broker refused (the message will come back).
    pub settle_errors: u64,
    /// Messages the broker took back while this worker held them (a lease
    /// that expired, a channel RabbitMQ closed past its consumer timeout):
    /// what their handler did was not recorded, and they will be delivered
    /// again (skipped then if their idempotency key is done).
    pub lost: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) received: AtomicU64,
    pub(super) succeeded: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) deferred: AtomicU64,
    pub(super) released: AtomicU64,
    pub(super) settle_errors: AtomicU64,
    pub(super) lost: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn snapshot(&self) -> WorkerStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerStats {
            received: get(&self.received),
            succeeded: get(&self.succeeded),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            duplicates: get(&self.duplicates),
            deferred: get(&self.deferred),
            released: get(&self.released),
            settle_errors: get(&self.settle_errors),
            lost: get(&self.lost),
        }
    }
}
