//! One Kafka consumer per worker: what it handed out, what it may commit,
//! which partitions wait for their head to be due, and rebalances.
//!
//! This file holds the `Reader` itself: joining the group, receiving and
//! closing. The rest is split by concept: the delivery record kept in the
//! commit metadata (`marks`), one partition's bookkeeping (`tracks`), the
//! assignment and rebalances (`assignment`), messages as read and their
//! reuse (`incoming`), the reading task (`reading`), and settling and
//! committing (`commit`).

mod assignment;
mod commit;
mod incoming;
mod marks;
mod reading;
#[cfg(test)]
mod tests;
mod tracks;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::assignment::{finish_revocation, heartbeat_interval, ReaderContext, ReaderState};
pub(super) use self::incoming::KafkaReceipt;
pub(super) use self::marks::Marks;
use self::reading::READ_AHEAD;
use self::tracks::run_len;
use super::publish::Outbox;
use super::{consumer_group, delay_topic, err, retry_topic, Options, BACKEND, LEVELS};
use crate::broker::Delivery;
use crate::error::{Error, Result};

/// Where a subscribed topic sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Main,
    Delay(u64),
    Retry(u64),
}

/// A topic (its name shared, not copied per message) and partition.
type Part = (Arc<str>, i32);

/// How many receives' worth the delivery record claims past what was
/// handed out. A commit takes about a millisecond; at one receive's worth
/// the handlers often caught up with the record and waited for it.
const RECORD_AHEAD: i64 = 2;

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
