//! The worker runtime: where all policy lives, once, for every backend.
//!
//! A [`Worker`] receives messages for one group of one topic and runs a
//! [`Handler`] on each, then settles the message:
//! - success: the idempotency key (if any) is marked done, then the
//!   message is acked (acks are batched);
//! - a retryable failure within the budget: the message goes back to the
//!   broker with the next attempt number and a due time from the
//!   [`RetryPolicy`]; it waits there, never in this process;
//! - a failure that is not retryable, or the last attempt's failure: the
//!   message goes to the group's dead letters with the reason.
//!
//! Tasks inside one worker:
//! - the *fetcher* receives only when a slot is free (`concurrency +
//!   prefetch` slots), never abandons a receive half-way, and queues what
//!   it receives;
//! - `concurrency` *handler loops* take messages from the queue, one at a
//!   time per message key, so a key's messages run in the order they were
//!   received;
//! - the *lease keeper* renews the leases of every held message (and its
//!   idempotency claim) every third of the lease, from Rust, whatever the
//!   handler's language runtime is doing;
//! - the *acker* acks finished messages in batches.

mod acks;
mod dispatch;
mod fetch;
mod handler;
mod leases;
mod options;
mod policy;
mod queue;
mod read_ahead;
mod retry;
mod stats;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use acks::{ack_fill, ack_loop, AckQueue, ACK_BATCH};
use dispatch::{handler_loop, Dispatch};
use fetch::fetch_loop;
pub use handler::{Handler, HandlerError, Job};
use leases::{hand_back_leftovers, lease_loop, release_slots, Held};
pub use options::{WorkerOptions, MAX_CONCURRENCY, PARTITIONED_PREFETCH};
use queue::Queue;
use read_ahead::ReadAhead;
pub use read_ahead::{READ_AHEAD_BYTES, READ_AHEAD_COUNT, READ_AHEAD_TIME};
pub use retry::RetryPolicy;
use stats::Counters;
pub use stats::WorkerStats;

use crate::broker::{Broker, Delivery};
use crate::error::{Error, Result};
use crate::idempotency::{IdempotencyStore, MemoryStore};
use crate::message::validate_name;
use crate::FastMap;

pub(super) struct Inner {
    broker: Arc<dyn Broker>,
    topic: String,
    group: String,
    scope: String,
    consumer: String,
    handler: Arc<dyn Handler>,
    options: WorkerOptions,
    store: Arc<dyn IdempotencyStore>,
    retention: Duration,
    cancel: CancellationToken,
    counters: Counters,
    /// What the lease keeper renews. Hashed with ahash: looked up twice a
    /// message where the broker leases, SipHash showed in profiles.
    held: Mutex<FastMap<u64, Held>>,
    /// Whether the broker's deliveries have leases to renew.
    leases: bool,
    /// Most messages ever held at once: `concurrency` plus the most the
    /// read-ahead can be.
    capacity: usize,
    /// How many messages to hold beyond the running handlers.
    read_ahead: ReadAhead,
    /// Deliveries dropped unsettled (their handler stopped at the end of the
    /// shutdown grace, or a bug of ours panicked), with their claim: handed
    /// back when the worker stops.
    abandoned: Mutex<Vec<(Delivery, Option<String>)>>,
    /// Held by a run's fetcher for as long as it runs.
    fetching: Arc<tokio::sync::Mutex<()>>,
    next_id: AtomicU64,
    running: AtomicBool,
}

/// Runs a handler over one group of one topic. Cheap to clone; clones
/// share the same worker.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("topic", &self.inner.topic)
            .field("group", &self.inner.group)
            .field("consumer", &self.inner.consumer)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for `group` on `topic`. Checks the options; nothing runs
    /// until [`Worker::run`].
    pub fn new<H: Handler>(
        broker: Arc<dyn Broker>,
        topic: &str,
        group: &str,
        handler: H,
        options: WorkerOptions,
    ) -> Result<Self> {
        Self::with_handler(broker, topic, group, Arc::new(handler), options)
    }

    /// Like [`Worker::new`], with a shared handler (for the bindings).
    pub fn with_handler(
        broker: Arc<dyn Broker>,
        topic: &str,
        group: &str,
        handler: Arc<dyn Handler>,
        options: WorkerOptions,
    ) -> Result<Self> {
        validate_name("topic", topic)?;
        validate_name("group", group)?;
        options.validate()?;
        let store = options
            .idempotency_store
            .clone()
            .or_else(|| broker.idempotency_store())
            .unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let retention = options.idempotency_retention.max(options.retry.horizon() * 2);
        let consumer = options
            .consumer_name
            .clone()
            .unwrap_or_else(|| format!("{}-{:06x}", std::process::id(), fastrand::u32(..0x100_0000)));
        let capabilities = broker.capabilities();
        let read_ahead = ReadAhead::new(options.concurrency, options.prefetch, capabilities.owned_partitions);
        let leases = capabilities.leases;
        let capacity = options.concurrency + read_ahead.most();
        Ok(Worker {
            inner: Arc::new(Inner {
                broker,
                topic: topic.to_string(),
                group: group.to_string(),
                scope: format!("{topic}/{group}"),
                consumer,
                handler,
                options,
                store,
                retention,
                cancel: CancellationToken::new(),
                counters: Counters::default(),
                held: Mutex::new(FastMap::default()),
                leases,
                capacity,
                read_ahead,
                abandoned: Mutex::new(Vec::new()),
                fetching: Arc::new(tokio::sync::Mutex::new(())),
                next_id: AtomicU64::new(1),
                running: AtomicBool::new(false),
            }),
        })
    }

    /// Cancelling this token shuts the worker down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Starts a graceful shutdown; [`Worker::run`] returns when it is done.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.inner.counters.snapshot()
    }

    /// This worker's consumer name.
    pub fn consumer_name(&self) -> &str {
        &self.inner.consumer
    }

    /// Runs until [`Worker::shutdown`] (or the token) is triggered, then
    /// stops receiving, lets running handlers finish within the grace
    /// period, hands back everything unfinished, and returns.
    pub async fn run(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.running.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyRunning);
        }
        // Reset however this ends, even if this future is dropped: the
        // worker can run again.
        struct NotRunning<'a>(&'a AtomicBool);
        impl Drop for NotRunning<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _not_running = NotRunning(&inner.running);
        self.run_inner().await
    }

    async fn run_inner(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        inner.broker.ensure_group(&inner.topic, &inner.group).await?;
        // A run dropped half-way leaves its fetcher to finish the receive in
        // progress (it never abandons one); what that receive got is listed
        // only once it is done, so wait for it before handing back.
        let fetching = Arc::clone(&inner.fetching).lock_owned().await;
        // What an earlier run dropped half-way left behind.
        hand_back_leftovers(&inner).await;
        let opts = &inner.options;
        let slots = Arc::new(Semaphore::new(inner.capacity));
        let dispatch = Arc::new(Dispatch { queue: Mutex::new(Queue::new()), ready: Notify::new() });
        // Handlers stop taking messages on shutdown, or when the fetcher stops for good.
        let stop_taking = inner.cancel.child_token();
        // Bounded: if acks fall behind, finished handlers wait, which holds back receiving.
        let acks = Arc::new(AckQueue::new(ACK_BATCH * 4, ack_fill(&inner), ACK_BATCH));
        // However this ends (even if this future is dropped), the acker
        // acks what is left and stops.
        let _close_acks = acks.close_on_drop();
        let background_stop = CancellationToken::new();
        // The fetcher stops on shutdown; it and the lease keeper also stop
        // if this future is dropped (the handler loops, in a JoinSet, are
        // aborted then), rather than receiving for nobody.
        let stop_fetching = inner.cancel.child_token();
        let _stop_tasks = (stop_fetching.clone().drop_guard(), background_stop.clone().drop_guard());

        let fetch = fetch_loop(Arc::clone(&inner), Arc::clone(&slots), Arc::clone(&dispatch), stop_fetching.clone());
        let fetcher = tokio::spawn(async move {
            let _fetching = fetching;
            fetch.await
        });
        let keeper = tokio::spawn(lease_loop(Arc::clone(&inner), background_stop.clone()));
        let acker = tokio::spawn(ack_loop(Arc::clone(&inner), Arc::clone(&acks)));
        let mut handlers = JoinSet::new();
        for _ in 0..opts.concurrency {
            handlers.spawn(handler_loop(
                Arc::clone(&inner),
                Arc::clone(&dispatch),
                stop_taking.clone(),
                Arc::clone(&acks),
            ));
        }

        let fetch_result = fetcher.await.unwrap_or(Ok(()));
        stop_taking.cancel();

        // Shutdown: what never started goes back at once.
        let unstarted = dispatch.queue.lock().unwrap().drain();
        release_slots(&inner, unstarted).await;
        let graceful =
            tokio::time::timeout(opts.shutdown_grace, async { while handlers.join_next().await.is_some() {} }).await;
        if graceful.is_err() {
            tracing::warn!(topic = %inner.topic, group = %inner.group, "handlers still running after the shutdown grace period; handing their messages back");
            // Aborting the loops drops each running attempt, which cancels its job.
            handlers.shutdown().await;
        }
        // Every handler loop has ended: the acker takes what is left, then stops.
        acks.close();
        let _ = acker.await;
        // Anything left unsettled (handlers stopped mid-way) goes back now.
        hand_back_leftovers(&inner).await;
        if let Err(e) = inner.broker.stop_receiving(&inner.topic, &inner.group, &inner.consumer).await {
            tracing::warn!(error = %e, "could not hand back messages received ahead; they return with the connection");
        }
        background_stop.cancel();
        let _ = keeper.await;
        fetch_result
    }
}
