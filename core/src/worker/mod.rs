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
mod handler;
mod queue;
mod retry;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use acks::AckQueue;
pub use handler::{Handler, HandlerError, Job};
use queue::{Keyed, Queue};
pub use retry::RetryPolicy;

use crate::broker::{Broker, Delivery, ReceiveRequest};
use crate::dead_letter::{cause, DeadLetterReason};
use crate::error::{Error, Result};
use crate::idempotency::{Claim, IdempotencyStore, MemoryStore};
use crate::message::{now_millis, validate_name, FailureHistory, Message};
use crate::FastMap;

/// The default `prefetch` where consumers own whole partitions (Kafka):
/// about the batch a Kafka consumer takes per poll, and past the window
/// where consuming a backlog stops getting faster.
pub const PARTITIONED_PREFETCH: usize = 100;

/// How a worker runs. Every field has a default; see [`WorkerOptions::default`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Handlers running at once. Default 1.
    pub concurrency: usize,
    /// Messages received and held beyond the running ones, waiting for a
    /// handler slot. 0 receives only when a handler slot is free, so a long
    /// job never holds back messages another worker could take: the
    /// default, except where consumers own whole partitions (Kafka), whose
    /// messages no other consumer could take anyway; there it is
    /// [`PARTITIONED_PREFETCH`] (a window of one message ran at a tenth of
    /// the rate).
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

    fn validate(&self) -> Result<()> {
        self.retry.validate()?;
        if self.concurrency == 0 {
            return Err(Error::invalid_option("concurrency", "must be at least 1"));
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
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    succeeded: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    duplicates: AtomicU64,
    deferred: AtomicU64,
    released: AtomicU64,
    settle_errors: AtomicU64,
}

/// Most deliveries acked in one call.
const ACK_BATCH: usize = 256;
/// How long the acker waits for a batch to fill where the broker pushes
/// ahead. Elsewhere it does not wait: while one ack call (a round trip) is
/// out, the next batch gathers by itself.
const ACK_LINGER: Duration = Duration::from_millis(1);
/// How long the fetcher waits for free slots to gather into one receive.
const GATHER: Duration = Duration::from_millis(2);

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A message whose lease (where the broker leases) or idempotency claim
/// the lease keeper keeps fresh while the worker holds it.
struct Held {
    delivery: Delivery,
    claim: Option<String>,
}

/// A received delivery and the receive slot it occupies until its handler
/// is done (acks then go out in batches without holding slots). The
/// delivery is owned, not shared: only what has a lease or claim to renew
/// is also in `Inner::held` (a copy of its handles), so a message on a
/// broker without leases costs no allocation and no lock of the worker's own.
struct Slot {
    id: u64,
    delivery: Delivery,
    permit: Option<OwnedSemaphorePermit>,
    /// Listed in `Inner::held`.
    held: bool,
}

impl Slot {
    /// Frees the receive slot: the handler is done with this message.
    fn finished(mut self) -> Self {
        self.permit = None;
        self
    }
}

impl Keyed for Slot {
    fn key(&self) -> Option<&str> {
        self.delivery.message.key.as_deref()
    }
}

/// Where the fetcher leaves messages for the handler loops.
struct Dispatch {
    queue: Mutex<Queue<Slot>>,
    /// Wakes an idle handler loop when a message becomes ready.
    ready: Notify,
}

struct Inner {
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
    /// Most messages held at once: `concurrency` plus the prefetch (the
    /// backend's default where none was set).
    capacity: usize,
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
        let prefetch = options.prefetch.unwrap_or(if capabilities.owned_partitions { PARTITIONED_PREFETCH } else { 0 });
        let leases = capabilities.leases;
        let capacity = options.concurrency + prefetch;
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
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerStats {
            received: get(&c.received),
            succeeded: get(&c.succeeded),
            retried: get(&c.retried),
            dead_lettered: get(&c.dead_lettered),
            duplicates: get(&c.duplicates),
            deferred: get(&c.deferred),
            released: get(&c.released),
            settle_errors: get(&c.settle_errors),
        }
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

/// Hands back what no handler will settle: deliveries dropped unsettled
/// (their handler stopped at the end of the shutdown grace), and, after a
/// run was dropped half-way, what it left listed for the lease keeper (the
/// slots went with the run).
async fn hand_back_leftovers(inner: &Inner) {
    let mut leftovers = std::mem::take(&mut *inner.abandoned.lock().unwrap());
    leftovers.extend(inner.held.lock().unwrap().drain().map(|(_, held)| (held.delivery, held.claim)));
    if leftovers.is_empty() {
        return;
    }
    for (delivery, claim) in &leftovers {
        if let Some(key) = claim {
            let owner = claim_owner(inner, delivery);
            let _ = inner.store.release(&inner.scope, key, &owner).await;
        }
    }
    let deliveries: Vec<Delivery> = leftovers.into_iter().map(|(delivery, _)| delivery).collect();
    match inner.broker.release(&deliveries).await {
        Ok(()) => bump(&inner.counters.released, deliveries.len() as u64),
        Err(e) => tracing::warn!(error = %e, "could not hand messages back; they return when their lease expires"),
    }
}

/// Receives while there is room, until shutdown. A broker error is logged
/// and retried with backoff; a closed broker ends the worker.
async fn fetch_loop(
    inner: Arc<Inner>,
    slots: Arc<Semaphore>,
    dispatch: Arc<Dispatch>,
    stop: CancellationToken,
) -> Result<()> {
    let capacity = inner.capacity;
    let pushes_ahead = inner.broker.capabilities().pushes_ahead;
    let mut backoff = Duration::from_millis(100);
    // Kept from receive to receive (growing it permit by permit reallocated
    // several times a receive).
    let mut permits = Vec::with_capacity(capacity);
    loop {
        // What a failed receive took goes back before waiting for a slot
        // (else a receive error with every slot taken waited forever).
        permits.clear();
        // Stopping first: a fetcher stopped before it began must not receive.
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("semaphore never closed"),
        };
        permits.push(first);
        while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
            permits.push(p);
        }
        // Slots come back one by one as handlers finish; wait a moment for
        // half of them, so one receive fetches a batch rather than a message.
        // Not where the broker pushes ahead: its messages are here already.
        let gather_until = tokio::time::Instant::now() + GATHER;
        while !pushes_ahead && permits.len() < capacity.div_ceil(2) {
            match tokio::time::timeout_at(gather_until, Arc::clone(&slots).acquire_owned()).await {
                Ok(p) => permits.push(p.expect("semaphore never closed")),
                Err(_) => break,
            }
        }
        let request = ReceiveRequest {
            topic: &inner.topic,
            group: &inner.group,
            consumer: &inner.consumer,
            max: permits.len(),
            wait: inner.options.poll_wait,
            lease: inner.options.lease,
        };
        // Never dropped half-way: a receive that took messages must hand them on.
        match inner.broker.receive(request).await {
            Ok(deliveries) => {
                backoff = Duration::from_millis(100);
                let mut deliveries = deliveries;
                if deliveries.len() > permits.len() {
                    // A backend bug, not the caller's: hand the surplus back rather than hold it unleased.
                    let surplus = deliveries.split_off(permits.len());
                    tracing::warn!(
                        count = surplus.len(),
                        "the broker returned more messages than asked for; handing them back"
                    );
                    if let Err(e) = inner.broker.release(&surplus).await {
                        tracing::warn!(error = %e, "could not hand back the surplus; it returns after its lease");
                    }
                }
                bump(&inner.counters.received, deliveries.len() as u64);
                let received: Vec<Slot> = deliveries
                    .into_iter()
                    .zip(permits.drain(..))
                    .map(|(delivery, permit)| Slot {
                        id: inner.next_id.fetch_add(1, Ordering::Relaxed),
                        delivery,
                        permit: Some(permit),
                        held: inner.leases,
                    })
                    .collect();
                if inner.leases {
                    let mut held = inner.held.lock().unwrap();
                    for slot in &received {
                        held.insert(slot.id, Held { delivery: Delivery::clone(&slot.delivery), claim: None });
                    }
                }
                let ready = {
                    let mut queue = dispatch.queue.lock().unwrap();
                    received.into_iter().filter_map(|slot| queue.push(slot).then_some(())).count()
                };
                // One loop; it wakes others if its handlers keep it busy.
                if ready > 0 {
                    dispatch.ready.notify_one();
                }
            }
            Err(Error::Closed) => return Err(Error::Closed),
            Err(e) => {
                tracing::warn!(error = %e, topic = %inner.topic, group = %inner.group, "receive failed; trying again in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if stop.is_cancelled() {
            return Ok(());
        }
    }
}

/// Renews every held lease and claim each third of the lease.
async fn lease_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let lease = inner.options.lease;
    let every = lease / 3;
    let renew_leases = inner.broker.capabilities().leases;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let (deliveries, claims): (Vec<Delivery>, Vec<(String, String)>) = {
            let held = inner.held.lock().unwrap();
            let deliveries = held.values().map(|h| Delivery::clone(&h.delivery)).collect();
            let claims =
                held.values().filter_map(|h| h.claim.clone().map(|k| (k, claim_owner(&inner, &h.delivery)))).collect();
            (deliveries, claims)
        };
        if renew_leases && !deliveries.is_empty() {
            if let Err(e) = inner.broker.extend_leases(&deliveries, lease).await {
                tracing::warn!(error = %e, "could not renew leases");
            }
        }
        for (key, owner) in claims {
            if let Err(e) = inner.store.renew(&inner.scope, &key, &owner, lease).await {
                tracing::warn!(error = %e, "could not renew an idempotency claim");
            }
        }
    }
}

/// Acks finished messages in batches: whatever is waiting, up to
/// `ACK_BATCH`. Where the broker pushes ahead, an ack costs it work per
/// call (on RabbitMQ each ack frame is a quorum-queue command) rather than
/// a round trip here: the batch waits up to `ACK_LINGER` to reach half the
/// worker's capacity, so the broker refills half the window at a time
/// while the other half is handled.
async fn ack_loop(inner: Arc<Inner>, acks: Arc<AckQueue<Slot>>) {
    use futures_util::FutureExt;
    let mut batch = Vec::new();
    while acks.next_batch(ACK_LINGER, &mut batch).await {
        // Settling now: the lease keeper can let go.
        if batch.iter().any(|slot| slot.held) {
            let mut held = inner.held.lock().unwrap();
            for slot in batch.iter().filter(|slot| slot.held) {
                held.remove(&slot.id);
            }
        }
        let deliveries: Vec<Delivery> = batch.drain(..).map(|slot| slot.delivery).collect();
        // A backend that panics here (a bug) must not end the acker: handler
        // loops would then wait for room in its queue forever.
        let acked = std::panic::AssertUnwindSafe(inner.broker.ack(&deliveries)).catch_unwind().await;
        match acked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                bump(&inner.counters.settle_errors, 1);
                tracing::warn!(error = %e, "ack failed; the message will be delivered again and skipped if it has an idempotency key");
            }
            Err(_) => {
                bump(&inner.counters.settle_errors, 1);
                tracing::error!("the broker's ack panicked (a bug); the messages will be delivered again");
            }
        }
        inner.broker.dispose(deliveries);
    }
}

/// The batch the acker waits (up to `ACK_LINGER`) to gather: half the
/// worker's capacity where the broker pushes ahead, else none.
fn ack_fill(inner: &Inner) -> usize {
    if inner.broker.capabilities().pushes_ahead {
        (inner.capacity / 2).clamp(1, ACK_BATCH)
    } else {
        1
    }
}

async fn release_slots(inner: &Inner, slots: Vec<Slot>) {
    if slots.is_empty() {
        return;
    }
    let ids: Vec<u64> = slots.iter().filter(|s| s.held).map(|s| s.id).collect();
    let deliveries: Vec<Delivery> = slots.into_iter().map(|s| s.delivery).collect();
    match inner.broker.release(&deliveries).await {
        Ok(()) => bump(&inner.counters.released, deliveries.len() as u64),
        Err(e) => tracing::warn!(error = %e, "could not hand messages back; they return when their lease expires"),
    }
    let mut held = inner.held.lock().unwrap();
    for id in ids {
        held.remove(&id);
    }
}

fn claim_owner(inner: &Inner, d: &Delivery) -> String {
    format!("{}/{}", inner.consumer, d.message.id)
}

/// One of `concurrency` handler loops: takes the next ready message, runs
/// the policy on it, and again, until shutdown. Long-lived loops rather
/// than a task per message: under load a loop goes from one message to the
/// next without spawning or waking anything.
///
/// A loop wakes another only when the message it took keeps it busy: its
/// handler waits (for I/O, a timer...) or ran longer than `BUSY`. Handlers
/// that finish at once then run one after another in one loop rather than
/// waking (and moving between threads) up to `concurrency` loops for a
/// moment's work each; handlers that wait or work still run `concurrency`
/// at once.
async fn handler_loop(inner: Arc<Inner>, dispatch: Arc<Dispatch>, stop: CancellationToken, acks: Arc<AckQueue<Slot>>) {
    use futures_util::FutureExt;
    // How long handlers that finish at once take, read off the clock every
    // `stride` handlers (doubling up to `MAX_STRIDE` while they are quick,
    // back to every one once they are not): a clock read per message showed
    // in profiles. `since` is the last read, `unmeasured` the handlers after it.
    let mut since: Option<std::time::Instant> = None;
    let (mut stride, mut unmeasured) = (1u32, 0u32);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let next = dispatch.queue.lock().unwrap().take();
        let slot = match next {
            Some(slot) => slot,
            None => {
                // Listening before looking again: a message queued after
                // the look wakes this loop. (Only when idle: registering
                // with the Notify takes its lock.)
                let woken = dispatch.ready.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let again = dispatch.queue.lock().unwrap().take();
                match again {
                    Some(slot) => slot,
                    None => {
                        since = None;
                        tokio::select! {
                            _ = woken => continue,
                            _ = stop.cancelled() => return,
                        }
                    }
                }
            }
        };
        let key = slot.delivery.message.key.clone();
        // Handler panics are caught inside; this guards the loop and the
        // key's order against a bug of ours.
        let work = std::panic::AssertUnwindSafe(process(&inner, slot, &acks)).catch_unwind();
        tokio::pin!(work);
        let started = *since.get_or_insert_with(|| {
            unmeasured = 0;
            std::time::Instant::now()
        });
        // Polled once here (it does all it can without waiting), then awaited if it waits.
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(work.as_mut(), cx))).await;
        let outcome = match first {
            std::task::Poll::Ready(outcome) => {
                unmeasured += 1;
                if unmeasured >= stride {
                    let now = std::time::Instant::now();
                    if now.duration_since(started) >= BUSY * unmeasured {
                        wake_another(&dispatch);
                        stride = 1;
                    } else {
                        stride = (stride * 2).min(MAX_STRIDE);
                    }
                    (since, unmeasured) = (Some(now), 0);
                }
                outcome
            }
            std::task::Poll::Pending => {
                wake_another(&dispatch);
                since = None;
                work.await
            }
        };
        if outcome.is_err() {
            tracing::error!("the worker's policy panicked (a bug); the message is handed back when the worker stops");
        }
        if let Some(key) = key {
            dispatch.queue.lock().unwrap().finished(&key);
        }
        // A loop whose handlers never wait must still let other tasks run
        // (when it yields, the next handler's time includes the time away:
        // at worst one needless look for another loop to wake).
        tokio::task::consume_budget().await;
    }
}

/// How long a handler may run without waiting before its loop hands the
/// next messages to another loop.
const BUSY: Duration = Duration::from_micros(50);

/// Most handlers between two looks at the clock while they finish at once.
const MAX_STRIDE: u32 = 8;

/// Wakes another handler loop if a message is ready for it.
fn wake_another(dispatch: &Dispatch) {
    if dispatch.queue.lock().unwrap().has_ready() {
        dispatch.ready.notify_one();
    }
}

/// A delivery the policy has not settled yet. Dropped unsettled (its
/// handler loop stopped at the end of the shutdown grace, or a bug of ours
/// panicked), it is left for the worker to hand back as it stops.
struct Unsettled<'a> {
    inner: &'a Inner,
    slot: Option<Slot>,
    claim: Option<String>,
}

impl Unsettled<'_> {
    fn slot(&self) -> &Slot {
        self.slot.as_ref().expect("a delivery is settled once, at the end")
    }

    /// The slot, settled: an ack queued, or a retry or dead letter done
    /// (or refused by the broker, which then delivers the message again).
    fn settled(mut self) -> Slot {
        self.slot.take().expect("a delivery is settled once, at the end")
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            forget(self.inner, &slot);
            self.inner.abandoned.lock().unwrap_or_else(|e| e.into_inner()).push((slot.delivery, self.claim.take()));
        }
    }
}

/// The policy for one delivery.
async fn process(inner: &Arc<Inner>, slot: Slot, acks: &AckQueue<Slot>) {
    let mut unsettled = Unsettled { inner, slot: Some(slot), claim: None };
    let max_attempts = inner.options.retry.max_attempts();
    let delivery = &unsettled.slot().delivery;
    let message = Arc::clone(&delivery.message);

    if let Some(why) = &delivery.malformed {
        let reason = reason(inner, &message, cause::MALFORMED, "malformed", why);
        return settle_dead(inner, unsettled, reason).await;
    }
    if message.attempt > max_attempts {
        let (kind, last) = match &message.failures {
            Some(f) => (f.last_error_kind.clone(), f.last_error.clone()),
            None => ("redelivered".to_string(), String::new()),
        };
        let why = format!(
            "delivered {} times, more than the {} attempts allowed, without being settled (its consumers died or lost the lease){}{}",
            message.attempt,
            max_attempts,
            if last.is_empty() { "" } else { "; last error: " },
            last
        );
        let reason = reason(inner, &message, cause::REDELIVERY_LIMIT, &kind, &why);
        return settle_dead(inner, unsettled, reason).await;
    }

    // The idempotency check.
    if let Some(key) = &message.idempotency_key {
        let owner = claim_owner(inner, &unsettled.slot().delivery);
        match inner.store.claim(&inner.scope, key, &owner, inner.options.lease).await {
            Ok(Claim::AlreadyDone) => {
                bump(&inner.counters.duplicates, 1);
                tracing::debug!(id = %message.id, key = %key, "duplicate of a done idempotency key; acked without running");
                acks.push(unsettled.settled().finished()).await;
                return;
            }
            Ok(Claim::Busy) => {
                bump(&inner.counters.deferred, 1);
                return settle_later(inner, unsettled, inner.options.busy_key_delay).await;
            }
            Ok(Claim::Acquired) => {
                // The lease keeper renews the claim from now on.
                let slot = unsettled.slot.as_mut().expect("not settled yet");
                let mut held = inner.held.lock().unwrap();
                let entry = held
                    .entry(slot.id)
                    .or_insert_with(|| Held { delivery: Delivery::clone(&slot.delivery), claim: None });
                entry.claim = Some(key.clone());
                slot.held = true;
                unsettled.claim = Some(key.clone());
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency store unavailable; the message will be tried again later");
                return settle_later(inner, unsettled, inner.options.busy_key_delay).await;
            }
        }
    }

    let delivery = &unsettled.slot().delivery;
    let (topic, group) = (Arc::clone(&delivery.topic), Arc::clone(&delivery.group));
    let job = Job::new(Arc::clone(&message), topic, group, max_attempts);
    let outcome = run_handler(inner, job).await;

    match outcome {
        Ok(()) => {
            if let Some(key) = &unsettled.claim {
                let owner = claim_owner(inner, &unsettled.slot().delivery);
                if let Err(e) = inner.store.complete(&inner.scope, key, &owner, inner.retention).await {
                    tracing::warn!(error = %e, "could not mark the idempotency key done; a duplicate may run again");
                }
            }
            bump(&inner.counters.succeeded, 1);
            acks.push(unsettled.settled().finished()).await;
        }
        Err(error) => {
            if let Some(key) = &unsettled.claim {
                let owner = claim_owner(inner, &unsettled.slot().delivery);
                if let Err(e) = inner.store.release(&inner.scope, key, &owner).await {
                    tracing::warn!(error = %e, "could not release the idempotency claim; it expires with its lease");
                }
            }
            tracing::info!(id = %message.id, attempt = message.attempt, error = %error, "handler failed");
            if error.retryable && message.attempt < max_attempts {
                let delay = error.retry_after.unwrap_or_else(|| inner.options.retry.delay(message.attempt));
                let mut next = Message::clone(&message);
                next.attempt = message.attempt + 1;
                next.failures = Some(record_failure(message.failures.as_ref(), &error));
                next.deliver_at = Some(now_millis() + delay);
                match inner.broker.retry(&unsettled.slot().delivery, next).await {
                    Ok(()) => bump(&inner.counters.retried, 1),
                    Err(e) => settle_error(inner, &e),
                }
                forget(inner, &unsettled.settled());
            } else {
                let why = if error.retryable { cause::RETRIES_EXHAUSTED } else { cause::NOT_RETRYABLE };
                let reason = reason(inner, &message, why, &error.kind, &error.message);
                settle_dead(inner, unsettled, reason).await;
            }
        }
    }
}

/// Runs the handler so that a panic or a timeout is a failure of this
/// message, never of the worker. The job's cancellation fires when the
/// timeout passes or this attempt is abandoned (its future dropped: the
/// shutdown grace ended, or the run was dropped), for handlers that run
/// outside this future.
async fn run_handler(inner: &Arc<Inner>, mut job: Job) -> std::result::Result<(), HandlerError> {
    use futures_util::FutureExt;
    let abandoned = job.cancellation_token().clone().drop_guard();
    let limit = inner.options.handler_timeout;
    job.deadline = limit.map(|limit| SystemTime::now() + limit);
    // The handler is only ever polled here; a panic leaves nothing of ours half-updated.
    let guarded = std::panic::AssertUnwindSafe(inner.handler.handle(job)).catch_unwind();
    let outcome = match limit {
        None => guarded.await,
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // Dropping the future stops a Rust handler at its next
                // await; dropping the guard tells any other kind.
                drop(abandoned);
                return Err(
                    HandlerError::retryable(format!("handler did not finish within {limit:?}")).with_kind("timeout")
                );
            }
        },
    };
    abandoned.disarm();
    outcome.unwrap_or_else(|payload| {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        Err(HandlerError::retryable(text).with_kind("panic"))
    })
}

fn record_failure(previous: Option<&FailureHistory>, error: &HandlerError) -> FailureHistory {
    let now = now_millis();
    FailureHistory {
        first_failed_at: previous.map(|p| p.first_failed_at).unwrap_or(now),
        last_failed_at: now,
        last_error_kind: error.kind.clone(),
        last_error: error.message.clone(),
    }
}

fn reason(inner: &Inner, message: &Message, why: &str, kind: &str, error_message: &str) -> DeadLetterReason {
    let now = SystemTime::now();
    DeadLetterReason {
        topic: inner.topic.clone(),
        group: inner.group.clone(),
        attempts: message.attempt,
        cause: why.to_string(),
        error_kind: kind.to_string(),
        error_message: error_message.to_string(),
        first_failed_at: message.failures.as_ref().map(|f| f.first_failed_at).unwrap_or(now),
        last_failed_at: now,
    }
}

async fn settle_dead(inner: &Arc<Inner>, unsettled: Unsettled<'_>, reason: DeadLetterReason) {
    let delivery = &unsettled.slot().delivery;
    tracing::warn!(id = %delivery.message.id, cause = %reason.cause, error = %reason.error_message, "dead-lettered");
    match inner.broker.dead_letter(delivery, &reason).await {
        Ok(()) => bump(&inner.counters.dead_lettered, 1),
        Err(e) => settle_error(inner, &e),
    }
    forget(inner, &unsettled.settled());
}

/// Puts the message back for later without counting an attempt.
async fn settle_later(inner: &Arc<Inner>, unsettled: Unsettled<'_>, delay: Duration) {
    let delivery = &unsettled.slot().delivery;
    let mut again = Message::clone(&delivery.message);
    again.deliver_at = Some(now_millis() + delay);
    if let Err(e) = inner.broker.retry(delivery, again).await {
        settle_error(inner, &e);
    }
    forget(inner, &unsettled.settled());
}

fn settle_error(inner: &Inner, e: &Error) {
    bump(&inner.counters.settle_errors, 1);
    tracing::warn!(error = %e, "could not settle a message; it will be delivered again");
}

/// Takes a settled delivery off the lease keeper's list.
fn forget(inner: &Inner, slot: &Slot) {
    if slot.held {
        inner.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&slot.id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Runs `worker` in the background.
    fn start(worker: &Worker) -> tokio::task::JoinHandle<Result<()>> {
        let runner = worker.clone();
        tokio::spawn(async move { runner.run().await })
    }

    /// Waits until `worker`'s stats satisfy `done` or 20 s pass (the caller
    /// asserts what it expects).
    async fn until(worker: &Worker, done: impl Fn(&WorkerStats) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&worker.stats()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `worker` has handled `n` messages or 20 s pass.
    async fn until_succeeded(worker: &Worker, n: u64) {
        until(worker, |s| s.succeeded >= n).await;
    }

    /// A handler that succeeds at once.
    async fn no_op(_job: Job) -> std::result::Result<(), HandlerError> {
        Ok(())
    }

    /// Runs `count` messages through a worker of `concurrency` whose handler
    /// is `work`; returns how many handlers ran at once at most.
    async fn peak_running<F, Fut>(concurrency: usize, count: usize, work: F) -> usize
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let broker = crate::connect("memory://").await.unwrap();
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", (0..count).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p, work) = (Arc::clone(&running), Arc::clone(&peak), Arc::new(work));
        let handler = move |_job: Job| {
            let (r, p, work) = (Arc::clone(&r), Arc::clone(&p), Arc::clone(&work));
            async move {
                p.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                work().await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        };
        // Room for every message at once: one receive takes them all, and
        // the fetcher wakes one loop for them (the loops spread them).
        let options =
            WorkerOptions::default().concurrency(concurrency).prefetch(count).poll_wait(Duration::from_millis(50));
        let worker = Worker::new(broker, "t", "g", handler, options).unwrap();
        let task = start(&worker);
        until_succeeded(&worker, count as u64).await;
        worker.shutdown();
        task.await.unwrap().unwrap();
        assert_eq!(worker.stats().succeeded, count as u64);
        peak.load(Ordering::SeqCst)
    }

    /// Where consumers own whole partitions, a worker holds
    /// `PARTITIONED_PREFETCH` messages beyond its handlers unless told
    /// otherwise; elsewhere only what its handlers run.
    #[tokio::test]
    async fn the_default_window_follows_partition_ownership() {
        for (owned, prefetch, held) in [(true, None, 1 + PARTITIONED_PREFETCH), (true, Some(0), 1), (false, None, 1)] {
            let memory = crate::connect("memory://").await.unwrap();
            memory.ensure_group("t", "g").await.unwrap();
            memory.publish("t", (0..150).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
            let broker = FaultyBroker { owned_partitions: owned, ..FaultyBroker::new(memory, 0, 0) };
            // Handlers wait until the gate closes: what was received is held.
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let g = Arc::clone(&gate);
            let handler = move |_job: Job| {
                let g = Arc::clone(&g);
                async move {
                    let _ = g.acquire().await;
                    Ok::<(), HandlerError>(())
                }
            };
            let mut options = WorkerOptions::default().poll_wait(Duration::from_millis(20));
            options.prefetch = prefetch;
            let worker = Worker::new(Arc::new(broker), "t", "g", handler, options).unwrap();
            let task = start(&worker);
            until(&worker, |s| s.received >= held as u64).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(worker.stats().received, held as u64, "owned partitions {owned}, prefetch {prefetch:?}");
            gate.close();
            worker.shutdown();
            task.await.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_that_wait_run_concurrency_at_once() {
        let peak = peak_running(4, 8, || tokio::time::sleep(Duration::from_millis(100))).await;
        assert_eq!(peak, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_that_work_without_waiting_spread_over_threads() {
        // Never yields: only the time it takes tells its loop to wake another.
        let peak = peak_running(4, 8, || async { std::thread::sleep(Duration::from_millis(20)) }).await;
        assert!(peak >= 2, "one loop ran every busy handler in turn (peak {peak})");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_handlers_after_quick_ones_still_spread_over_threads() {
        // 200 handlers that finish at once (the loop looks at the clock
        // less and less often), then 16 that block 20 ms each.
        let (calls, running, peak) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r, p) = (Arc::clone(&calls), Arc::clone(&running), Arc::clone(&peak));
        peak_running(4, 216, move || {
            let busy = c.fetch_add(1, Ordering::SeqCst) >= 200;
            let (r, p) = (Arc::clone(&r), Arc::clone(&p));
            async move {
                if busy {
                    p.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    r.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .await;
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak >= 2, "one loop ran every busy handler in turn (peak {peak})");
    }

    /// The in-memory broker, with faults: its first `failures` receives
    /// fail and its first `panics` acks panic; with `leases` false it says
    /// it has no leases to renew (as RabbitMQ and Kafka).
    #[derive(Debug)]
    struct FaultyBroker {
        inner: Arc<dyn Broker>,
        failures: AtomicUsize,
        panics: AtomicUsize,
        leases: bool,
        owned_partitions: bool,
        /// The next receive that gets messages says so on `holding`, then
        /// waits for `go_on` before returning them.
        hold_once: AtomicBool,
        holding: Notify,
        go_on: Notify,
    }

    impl FaultyBroker {
        fn new(inner: Arc<dyn Broker>, failures: usize, panics: usize) -> Self {
            FaultyBroker {
                inner,
                failures: AtomicUsize::new(failures),
                panics: AtomicUsize::new(panics),
                leases: true,
                owned_partitions: false,
                hold_once: AtomicBool::new(false),
                holding: Notify::new(),
                go_on: Notify::new(),
            }
        }
    }

    #[async_trait::async_trait]
    impl Broker for FaultyBroker {
        fn backend(&self) -> &'static str {
            self.inner.backend()
        }
        fn capabilities(&self) -> crate::broker::Capabilities {
            crate::broker::Capabilities {
                leases: self.leases,
                owned_partitions: self.owned_partitions,
                ..self.inner.capabilities()
            }
        }
        async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
            self.inner.ensure_group(topic, group).await
        }
        async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
            self.inner.publish(topic, messages).await
        }
        async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: bytes::Bytes) -> Result<()> {
            self.inner.publish_raw(topic, headers, payload).await
        }
        async fn receive(&self, request: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
            if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(Error::Backend { backend: "test", reason: "receive failed".into() });
            }
            let got = self.inner.receive(request).await?;
            if !got.is_empty() && self.hold_once.swap(false, Ordering::SeqCst) {
                self.holding.notify_one();
                self.go_on.notified().await;
            }
            Ok(got)
        }
        async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
            if self.panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                panic!("ack panicked");
            }
            self.inner.ack(deliveries).await
        }
        async fn extend_leases(&self, deliveries: &[Delivery], lease: Duration) -> Result<()> {
            self.inner.extend_leases(deliveries, lease).await
        }
        async fn release(&self, deliveries: &[Delivery]) -> Result<()> {
            self.inner.release(deliveries).await
        }
        fn dispose(&self, deliveries: Vec<Delivery>) {
            self.inner.dispose(deliveries)
        }
        async fn retry(&self, delivery: &Delivery, next: Message) -> Result<()> {
            self.inner.retry(delivery, next).await
        }
        async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
            self.inner.dead_letter(delivery, reason).await
        }
        async fn inspect(&self, topic: &str, group: &str) -> Result<crate::broker::GroupStats> {
            self.inner.inspect(topic, group).await
        }
        async fn groups(&self, topic: &str) -> Result<Vec<String>> {
            self.inner.groups(topic).await
        }
        async fn list_dead_letters(
            &self,
            topic: &str,
            group: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<crate::dead_letter::DeadLetter>> {
            self.inner.list_dead_letters(topic, group, after, limit).await
        }
        async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
            self.inner.redrive_dead_letters(topic, group, ids).await
        }
        async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
            self.inner.purge_dead_letters(topic, group, ids).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_dropped_while_its_receive_finishes_leaves_nothing_stuck() {
        let inner = crate::connect("memory://").await.unwrap();
        let broker = Arc::new(FaultyBroker { hold_once: AtomicBool::new(true), ..FaultyBroker::new(inner, 0, 0) });
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", vec![Message::new("late")]).await.unwrap();
        // The default 30 s lease: longer than the test waits.
        let options = WorkerOptions::default().poll_wait(Duration::from_millis(20));
        let worker = Worker::new(Arc::clone(&broker) as Arc<dyn Broker>, "t", "g", no_op, options).unwrap();
        let task = start(&worker);
        // The first run's receive has the message and has not returned it yet.
        broker.holding.notified().await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        let again = start(&worker);
        // The receive returns only once the second run has begun: its
        // message must reach the second run, not a list nobody serves.
        tokio::time::sleep(Duration::from_millis(50)).await;
        broker.go_on.notify_one();
        until_succeeded(&worker, 1).await;
        worker.shutdown();
        again.await.unwrap().unwrap();
        assert_eq!(worker.stats().succeeded, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receive_errors_give_their_slots_back() {
        // One slot: a failed receive that kept it would leave none to receive with.
        let inner = crate::connect("memory://").await.unwrap();
        let broker: Arc<dyn Broker> = Arc::new(FaultyBroker::new(inner, 2, 0));
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", (0..3).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
        let worker = Worker::new(broker, "t", "g", no_op, WorkerOptions::default()).unwrap();
        let task = start(&worker);
        // Two failures: backoff 100 + 200 ms.
        until_succeeded(&worker, 3).await;
        worker.shutdown();
        task.await.unwrap().unwrap();
        assert_eq!(worker.stats().succeeded, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ack_that_panics_does_not_stop_the_acker() {
        let inner = crate::connect("memory://").await.unwrap();
        let broker: Arc<dyn Broker> = Arc::new(FaultyBroker::new(inner, 0, 1));
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", vec![Message::new("first")]).await.unwrap();
        let options = WorkerOptions::default().lease(Duration::from_millis(200)).poll_wait(Duration::from_millis(20));
        let worker = Worker::new(Arc::clone(&broker), "t", "g", no_op, options).unwrap();
        let task = start(&worker);
        until_succeeded(&worker, 1).await;
        broker.publish("t", (0..3).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
        // The first ack panicked: that message comes back after its lease
        // and is handled again; the later ones are acked.
        until_succeeded(&worker, 5).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = broker.inspect("t", "g").await.unwrap();
        worker.shutdown();
        task.await.unwrap().unwrap();
        assert_eq!((stats.ready, stats.in_flight), (0, 0), "every message acked");
        assert_eq!(worker.stats().succeeded, 5);
        assert_eq!(worker.stats().settle_errors, 1);
    }

    /// Handlers still running when the shutdown grace ends are stopped, and
    /// their messages and idempotency claims handed back at once, without
    /// counting an attempt, whether the broker leases deliveries or not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_past_the_shutdown_grace_hand_their_messages_back() {
        for leases in [true, false] {
            let inner = crate::connect("memory://").await.unwrap();
            let broker: Arc<dyn Broker> = Arc::new(FaultyBroker { leases, ..FaultyBroker::new(inner, 0, 0) });
            broker.ensure_group("t", "g").await.unwrap();
            broker.publish("t", vec![Message::new("stuck").with_idempotency_key("k")]).await.unwrap();
            let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
            let options = WorkerOptions::default()
                .idempotency_store(Arc::clone(&store))
                .poll_wait(Duration::from_millis(20))
                .shutdown_grace(Duration::from_millis(100));
            let stuck = |_: Job| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<(), HandlerError>(())
            };
            let worker = Worker::new(Arc::clone(&broker), "t", "g", stuck, options.clone()).unwrap();
            let task = start(&worker);
            until(&worker, |s| s.received >= 1).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            worker.shutdown();
            task.await.unwrap().unwrap();
            assert_eq!(worker.stats().released, 1, "leases: {leases}");
            let stats = broker.inspect("t", "g").await.unwrap();
            assert_eq!((stats.ready, stats.in_flight), (1, 0), "leases: {leases}");

            let attempts = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&attempts);
            let record = move |job: Job| {
                seen.lock().unwrap().push(job.attempt());
                async { Ok::<(), HandlerError>(()) }
            };
            let next = Worker::new(broker, "t", "g", record, options).unwrap();
            let task = start(&next);
            until_succeeded(&next, 1).await;
            next.shutdown();
            task.await.unwrap().unwrap();
            assert_eq!(*attempts.lock().unwrap(), vec![1], "leases: {leases}");
            assert_eq!(next.stats().deferred, 0, "the claim was not released (leases: {leases})");
        }
    }

    /// A handler that hands its job to work outside its own future (as the
    /// bindings do with a Python coroutine or a JavaScript promise), then
    /// waits far longer than any test; the outside work reports when it
    /// sees the job cancelled, and the job's deadline.
    fn hands_off(
        seen: tokio::sync::mpsc::UnboundedSender<(Option<SystemTime>, bool)>,
    ) -> impl Fn(Job) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<(), HandlerError>> + Send>>
           + Send
           + Sync
           + 'static {
        move |job: Job| {
            let seen = seen.clone();
            Box::pin(async move {
                let outside = job.clone();
                tokio::spawn(async move {
                    let in_time = tokio::time::timeout(Duration::from_secs(20), outside.cancelled()).await.is_ok();
                    let _ = seen.send((outside.deadline, in_time));
                });
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_past_its_timeout_is_cancelled_and_knew_its_deadline() {
        let broker = crate::connect("memory://").await.unwrap();
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", vec![Message::new("slow")]).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let options = WorkerOptions::default()
            .handler_timeout(Duration::from_millis(200))
            .retry(RetryPolicy::retries(0))
            .poll_wait(Duration::from_millis(20));
        let started = SystemTime::now();
        let worker = Worker::new(broker, "t", "g", hands_off(tx), options).unwrap();
        let task = start(&worker);
        let (deadline, cancelled) = rx.recv().await.unwrap();
        worker.shutdown();
        task.await.unwrap().unwrap();
        assert!(cancelled, "the job was never cancelled");
        let deadline = deadline.expect("a job with a timeout has a deadline");
        assert!(deadline >= started + Duration::from_millis(200), "deadline {deadline:?} before the timeout");
        assert!(deadline <= SystemTime::now(), "deadline {deadline:?} after the cancellation");
        assert_eq!(worker.stats().dead_lettered, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_running_past_the_shutdown_grace_are_cancelled() {
        let broker = crate::connect("memory://").await.unwrap();
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", vec![Message::new("stuck")]).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (running_tx, mut running) = tokio::sync::mpsc::unbounded_channel();
        let handler = hands_off(tx);
        let noting = move |job: Job| {
            let _ = running_tx.send(());
            handler(job)
        };
        let options =
            WorkerOptions::default().shutdown_grace(Duration::from_millis(100)).poll_wait(Duration::from_millis(20));
        let worker = Worker::new(broker, "t", "g", noting, options).unwrap();
        let task = start(&worker);
        running.recv().await.unwrap();
        worker.shutdown();
        task.await.unwrap().unwrap();
        let (deadline, cancelled) = rx.recv().await.unwrap();
        assert!(cancelled, "the job was never cancelled");
        assert_eq!(deadline, None, "no timeout, no deadline");
        assert_eq!(worker.stats().released, 1);
    }

    #[tokio::test]
    async fn a_job_that_finished_is_not_cancelled() {
        let broker = crate::connect("memory://").await.unwrap();
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", vec![Message::new("quick")]).await.unwrap();
        let kept = Arc::new(Mutex::new(None));
        let keep = Arc::clone(&kept);
        let handler = move |job: Job| {
            *keep.lock().unwrap() = Some(job);
            async { Ok::<(), HandlerError>(()) }
        };
        let options =
            WorkerOptions::default().handler_timeout(Duration::from_secs(5)).poll_wait(Duration::from_millis(20));
        let worker = Worker::new(broker, "t", "g", handler, options).unwrap();
        let task = start(&worker);
        until_succeeded(&worker, 1).await;
        worker.shutdown();
        task.await.unwrap().unwrap();
        let job = kept.lock().unwrap().take().expect("the handler ran");
        assert!(!job.is_cancelled(), "a finished job reads as cancelled");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_run_at_once_is_refused_as_already_running() {
        let broker = crate::connect("memory://").await.unwrap();
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", vec![Message::new("first")]).await.unwrap();
        let options = WorkerOptions::default().poll_wait(Duration::from_millis(20));
        let worker = Worker::new(broker, "t", "g", no_op, options).unwrap();
        let task = start(&worker);
        until_succeeded(&worker, 1).await;
        let second = worker.run().await.unwrap_err();
        assert_eq!(second.code(), "ALREADY_RUNNING", "{second}");
        worker.shutdown();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_run_stops_receiving_and_the_worker_can_run_again() {
        let broker = crate::connect("memory://").await.unwrap();
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", vec![Message::new("first")]).await.unwrap();
        // Room to receive more than one: a fetcher left running would take all five.
        let options = WorkerOptions::default().prefetch(10).poll_wait(Duration::from_millis(20));
        let worker = Worker::new(Arc::clone(&broker), "t", "g", no_op, options).unwrap();
        let task = start(&worker);
        until_succeeded(&worker, 1).await;
        assert_eq!(worker.stats().succeeded, 1);
        // Dropped mid-run (as a `select!` or a cancelled task does).
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        // A receive under way when the run was dropped ends within its poll wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let received = worker.stats().received;
        broker.publish("t", (0..5).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(worker.stats().received, received, "a dropped run received on");
        let task = start(&worker);
        until_succeeded(&worker, 6).await;
        worker.shutdown();
        task.await.unwrap().unwrap();
        assert_eq!(worker.stats().succeeded, 6);
    }

    /// A run dropped half-way, with a handler mid-message and more messages
    /// waiting for it, leaves nothing stuck: the next run hands them back
    /// and handles them at once (before, their leases were renewed for a
    /// handler that was gone).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_dropped_mid_message_leaves_nothing_stuck() {
        let broker = crate::connect("memory://").await.unwrap();
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", (0..5).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
        let stuck = Arc::new(AtomicBool::new(true));
        let is_stuck = Arc::clone(&stuck);
        let handler = move |_: Job| {
            let stuck = is_stuck.load(Ordering::SeqCst);
            async move {
                if stuck {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<(), HandlerError>(())
            }
        };
        // The default 30 s lease: longer than the test waits.
        let options = WorkerOptions::default().prefetch(4).poll_wait(Duration::from_millis(20));
        let worker = Worker::new(Arc::clone(&broker), "t", "g", handler, options).unwrap();
        let task = start(&worker);
        until(&worker, |s| s.received >= 5).await;
        assert_eq!(worker.stats().received, 5);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        stuck.store(false, Ordering::SeqCst);
        let task = start(&worker);
        until_succeeded(&worker, 5).await;
        worker.shutdown();
        task.await.unwrap().unwrap();
        assert_eq!(worker.stats().succeeded, 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_that_finish_at_once_all_run() {
        peak_running(16, 2_000, || async {}).await;
    }
}
