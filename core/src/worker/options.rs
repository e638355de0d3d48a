//! How a worker runs: [`WorkerOptions`], each field with its default.

use std::sync::Arc;
use std::time::Duration;

use super::RetryPolicy;
use crate::error::{Error, Result};
use crate::idempotency::IdempotencyStore;

/// The default `prefetch` where consumers own whole partitions (Kafka):
/// about the batch a Kafka consumer takes per poll, and past the window
/// where consuming a backlog stops getting faster.
pub const PARTITIONED_PREFETCH: usize = 100;

/// The most handlers one worker runs at once. A Python worker gives each
/// plain handler a thread, every language a task and a slot: a number past
/// this is a mistake (a count where a duration was meant), not a plan.
pub const MAX_CONCURRENCY: usize = 10_000;

/// How a worker runs. Every field has a default; see [`WorkerOptions::default`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Handlers running at once. Default 1.
    pub concurrency: usize,
    /// Messages received and held beyond the running ones, waiting for a
    /// handler slot. Set, it is that many always (0: receive only when a
    /// handler slot is free). Unset (the default), it follows the
    /// handlers: about [`READ_AHEAD_TIME`] of their work at the pace they
    /// have been finishing, at most [`READ_AHEAD_COUNT`] messages and
    /// [`READ_AHEAD_BYTES`] of payload, so quick handlers get messages in
    /// batches while slow ones hold nothing extra that another worker could
    /// take. Where consumers own whole partitions (Kafka), whose messages no
    /// other consumer could take anyway, the default is
    /// [`PARTITIONED_PREFETCH`] (a window of one message ran at a tenth of
    /// the rate).
    ///
    /// [`READ_AHEAD_TIME`]: super::READ_AHEAD_TIME
    /// [`READ_AHEAD_COUNT`]: super::READ_AHEAD_COUNT
    /// [`READ_AHEAD_BYTES`]: super::READ_AHEAD_BYTES
    pub prefetch: Option<usize>,
    /// The retry budget and backoff.
    pub retry: RetryPolicy,
    /// A handler running longer fails with kind `timeout` (retryable).
    /// Default: none.
    pub handler_timeout: Option<Duration>,
    /// Lease on each held message, renewed every third of it while the
    /// message is held. A consumer that dies loses its messages to others
    /// after at most this long. Default 30 s.
    pub lease: Duration,
    /// How long one receive waits for messages. Bounds how long shutdown
    /// waits for the receive in progress. Default 1 s.
    pub poll_wait: Duration,
    /// On shutdown, how long running handlers may take to finish before they
    /// are stopped and their messages handed back. Default 30 s.
    pub shutdown_grace: Duration,
    /// Where idempotency keys are recorded. Default: the backend's own store
    /// when it has one (shared by all its consumers), else this process's memory.
    pub idempotency_store: Option<Arc<dyn IdempotencyStore>>,
    /// How long a done key is remembered; raised to at least twice the
    /// retry horizon so a duplicate is recognised for as long as a retry
    /// of the original may still arrive. Default 24 h.
    pub idempotency_retention: Duration,
    /// When another consumer holds a message's idempotency key, the message
    /// comes back after this long (without counting an attempt). Default 1 s.
    pub busy_key_delay: Duration,
    /// This consumer's name. Default: `pid-random`.
    pub consumer_name: Option<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 1,
            prefetch: None,
            retry: RetryPolicy::default(),
            handler_timeout: None,
            lease: Duration::from_secs(30),
            poll_wait: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            idempotency_store: None,
            idempotency_retention: Duration::from_secs(24 * 3600),
            busy_key_delay: Duration::from_secs(1),
            consumer_name: None,
        }
    }
}

impl WorkerOptions {
    /// Sets `concurrency`.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }
    /// Sets `prefetch`.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }
    /// Leaves `prefetch` to the backend's default (see [`WorkerOptions::prefetch`]).
    pub fn default_prefetch(mut self) -> Self {
        self.prefetch = None;
        self
    }
    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Sets the handler timeout.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
        self
    }
    /// Sets the lease.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Sets the receive wait.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }
    /// Sets the shutdown grace period.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
    /// Sets the idempotency store.
    pub fn idempotency_store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.idempotency_store = Some(store);
        self
    }
    /// Sets how long a done idempotency key is remembered (raised to at
    /// least twice the retry horizon).
    pub fn idempotency_retention(mut self, retention: Duration) -> Self {
        self.idempotency_retention = retention;
        self
    }
    /// Sets the busy-key delay.
    pub fn busy_key_delay(mut self, delay: Duration) -> Self {
        self.busy_key_delay = delay;
        self
    }
    /// Sets the consumer name.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer_name = Some(name.into());
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        self.retry.validate()?;
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Error::invalid_option(
                "concurrency",
                format!("must be from 1 to {MAX_CONCURRENCY}, not {}", self.concurrency),
            ));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(Error::invalid_option("lease", "must be at least 100 ms"));
        }
        if self.poll_wait.is_zero() {
            return Err(Error::invalid_option("poll_wait", "must be more than 0"));
        }
        if self.handler_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_option("handler_timeout", "must be more than 0"));
        }
        Ok(())
    }
}
