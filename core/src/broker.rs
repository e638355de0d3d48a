//! The `Broker` trait: the primitives every backend implements.
//!
//! Backends implement mechanisms only. Policy (when to retry, how long to
//! wait, when to give up, idempotency, concurrency) lives once in
//! [`crate::worker`], so every backend behaves the same.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Serialize;

use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::idempotency::IdempotencyStore;
use crate::message::Message;

/// What a backend can and cannot do. Asking for something it cannot do is
/// an [`Error::Unsupported`], never a silent substitute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Largest accepted message (payload plus metadata), in bytes.
    pub max_message_bytes: usize,
    /// Messages can be published with a delivery time (`deliver_at`).
    pub delayed_delivery: bool,
    /// A group receives messages in publish order (per partition where the
    /// backend partitions, per key when all of one key go to one partition).
    pub ordered_delivery: bool,
    /// A group created after messages were published still receives the
    /// ones the backend retains (Kafka, Redis streams, embedded); AMQP
    /// queues only receive what is published after they are bound.
    pub replay_for_new_groups: bool,
    /// In-flight messages are held by a lease that expires unless renewed
    /// ([`Broker::extend_leases`]); otherwise by the connection.
    pub leases: bool,
    /// Messages are delivered to a consumer ahead of `receive` calls, up to
    /// what the consumer may hold (AMQP's prefetch; on Kafka, the delivery
    /// record's lead); those count as in flight until received and settled,
    /// and a receive returns at once what is already there.
    pub pushes_ahead: bool,
    /// A group's consumers each own whole partitions (Kafka): messages one
    /// consumer holds ahead of its handlers are messages no other consumer
    /// could take, so a worker's `prefetch` defaults to
    /// [`crate::worker::PARTITIONED_PREFETCH`] here rather than 0.
    pub owned_partitions: bool,
    /// [`GroupStats::oldest_age`] is reported.
    pub oldest_age: bool,
    /// How stale inspection figures may be (zero: exact at once). RabbitMQ's
    /// in-flight count comes from its management plugin, which refreshes it
    /// periodically.
    pub stats_delay: std::time::Duration,
}

/// Opaque, backend-specific handle to one delivery (a row id and lease
/// token, a stream entry id, a delivery tag, a partition offset...).
#[derive(Clone)]
pub struct Receipt(Arc<dyn Any + Send + Sync>);

impl Receipt {
    /// Wraps a backend's receipt value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Receipt(Arc::new(value))
    }

    /// The backend's receipt value, if it is of type `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }

    /// The backend's receipt value to change, if it is of type `T` and this
    /// is its only handle: for a backend that reuses the receipts of the
    /// deliveries it is given back (see [`Broker::dispose`]).
    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        Arc::get_mut(&mut self.0)?.downcast_mut::<T>()
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receipt(..)")
    }
}

/// A received message and what is needed to settle it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Delivery {
    /// Topic it was received from (shared: every delivery of a receive names the same one).
    pub topic: Arc<str>,
    /// Group it was received for.
    pub group: Arc<str>,
    /// The message, with `attempt` counting this delivery. Shared, not
    /// copied, with the handler's [`crate::Job`] and the worker's records:
    /// a delivery stays small to move.
    pub message: Arc<Message>,
    /// Set when the metadata was present but malformed; the runtime
    /// dead-letters such deliveries without running the handler.
    pub malformed: Option<String>,
    /// Backend handle used by ack, retry, dead-letter and lease calls.
    pub receipt: Receipt,
}

impl Delivery {
    /// Builds a delivery (for backends). A backend that hands out many
    /// passes the same `Arc<str>` names to each rather than copies, and may
    /// pass a message it put in its `Arc` early (a message is large: moved
    /// from step to step inline, it showed in profiles).
    pub fn new(
        topic: impl Into<Arc<str>>,
        group: impl Into<Arc<str>>,
        message: impl Into<Arc<Message>>,
        malformed: Option<String>,
        receipt: Receipt,
    ) -> Self {
        Delivery { topic: topic.into(), group: group.into(), message: message.into(), malformed, receipt }
    }

    /// The backend's receipt as `T`, or a backend error if it belongs to another backend.
    pub fn receipt_as<T: Any>(&self, backend: &'static str) -> Result<&T> {
        self.receipt
            .get::<T>()
            .ok_or_else(|| Error::Backend { backend, reason: "delivery does not belong to this broker".into() })
    }
}

/// What to receive.
#[derive(Clone, Debug)]
pub struct ReceiveRequest<'a> {
    /// Topic to read.
    pub topic: &'a str,
    /// Group to read for.
    pub group: &'a str,
    /// Name of this consumer (unique per process and worker).
    pub consumer: &'a str,
    /// At most this many deliveries.
    pub max: usize,
    /// Most messages the consumer means to hold at once, those it holds
    /// now included (a worker's concurrency plus its read-ahead). A backend
    /// that pushes ahead keeps about this many in flight (AMQP's prefetch).
    pub window: usize,
    /// Wait up to this long for the first message.
    pub wait: Duration,
    /// Lease length for lease-based backends.
    pub lease: Duration,
}

/// A consumer of a group as the broker sees it: what `celery inspect
/// active` or `kafka-consumer-groups --describe --members` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// The consumer's name (a worker's `consumer_name`; on Kafka, the member id).
    pub name: String,
    /// Messages it holds (received, not yet settled), when the broker knows.
    pub holding: Option<u64>,
    /// When it received the oldest message it holds, when the broker knows.
    #[serde(with = "crate::message::millis::option")]
    pub holding_since: Option<SystemTime>,
    /// Time since it last asked the broker for messages, when the broker knows.
    pub idle: Option<Duration>,
    /// Its partitions (Kafka).
    pub partitions: Vec<i32>,
}

impl ConsumerInfo {
    /// A consumer named `name` with nothing known yet (for backends).
    pub fn named(name: impl Into<String>) -> Self {
        ConsumerInfo { name: name.into(), ..Default::default() }
    }
}

/// Inspection figures for one group of one topic, all taken from the broker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupStats {
    /// Topic.
    pub topic: String,
    /// Group.
    pub group: String,
    /// Messages ready to be received now (the depth; on Kafka, the lag).
    pub ready: u64,
    /// Messages received and not yet acked, retried or dead-lettered;
    /// `None` when the broker could not tell (RabbitMQ without its
    /// management plugin), never a zero that is not one.
    pub in_flight: Option<u64>,
    /// Messages waiting for their time: delayed publishes and retries.
    pub waiting: u64,
    /// Messages in the group's dead letters.
    pub dead_letters: u64,
    /// Age of the oldest message not yet done (ready, in flight or waiting).
    pub oldest_age: Option<Duration>,
    /// Per-partition lag, for partitioned backends.
    pub partitions: Vec<PartitionLag>,
}

/// Lag of one partition (Kafka).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// Partition number.
    pub partition: i32,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// Log end offset.
    pub end: i64,
    /// `end - committed`.
    pub lag: i64,
}

/// The primitives a backend provides. All methods are safe to call
/// concurrently from many tasks.
///
/// Contract for every backend:
/// - `publish` returns only once the broker holds every message durably
///   (as durably as the backend can); on error, the caller may publish
///   again (at-least-once). It validates every message first and publishes
///   nothing if any is invalid or too large.
/// - `retry` and `dead_letter` are atomic: the delivery is settled and the
///   new copy stored together, never both pending and re-sent, never lost.
/// - `retry`, `dead_letter` and `release` on a delivery whose lease was lost
///   fail with [`Error::LeaseLost`] and change nothing. `ack` of a delivery
///   that is settled already fails the same way; an ack after the lease was
///   lost may instead settle the message (the work is done either way).
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Short backend name: `memory`, `sqlite`, `redis`, `amqp`, `kafka`.
    fn backend(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Creates the group on the topic if needed (a subscription). Idempotent.
    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()>;

    /// Publishes messages to a topic; every group of the topic receives
    /// each one. Messages with `deliver_at` in the future are held until then.
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()>;

    /// Publishes one message exactly as a plain client of the broker would
    /// (redis-cli, another AMQP or Kafka library): these native headers and
    /// this payload, with no Pillarbox metadata added. For bridges and for
    /// testing how foreign messages are consumed.
    async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: bytes::Bytes) -> Result<()>;

    /// Receives up to `max` messages for the group, waiting up to `wait` for
    /// the first one. Returns an empty vector when none came.
    async fn receive(&self, request: ReceiveRequest<'_>) -> Result<Vec<Delivery>>;

    /// Settles deliveries as done.
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()>;

    /// Takes deliveries the worker is finished with (settled). By default
    /// they are dropped here. A backend whose deliveries are built by one
    /// task of its own may free them there instead (glibc's malloc frees a
    /// block from another thread under the allocating thread's arena lock,
    /// which showed at hundreds of thousands of messages a second), or
    /// reuse their message and receipt for the next ones (see
    /// [`Receipt::get_mut`], [`crate::wire::decode_into`]).
    fn dispose(&self, deliveries: Vec<Delivery>) {
        drop(deliveries);
    }

    /// Renews the leases of deliveries still being worked on.
    async fn extend_leases(&self, deliveries: &[Delivery], lease: Duration) -> Result<()>;

    /// Hands deliveries back undone, to be received again at once, without
    /// counting an attempt. By default: a `retry` of the same message, due
    /// now, with the same attempt number; deliveries whose lease was lost
    /// are skipped (the broker has them back already).
    async fn release(&self, deliveries: &[Delivery]) -> Result<()> {
        for d in deliveries {
            let mut again = Message::clone(&d.message);
            again.deliver_at = None;
            match self.retry(d, again).await {
                Ok(()) | Err(Error::LeaseLost { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Settles the delivery and stores `next` (same id, the attempt number
    /// and failure history the runtime chose, `deliver_at` = when it is due)
    /// for this group only.
    async fn retry(&self, delivery: &Delivery, next: Message) -> Result<()>;

    /// Settles the delivery and moves its message to the group's dead
    /// letters with the reason.
    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()>;

    /// Inspection figures for a group.
    async fn inspect(&self, topic: &str, group: &str) -> Result<GroupStats>;

    /// Groups known on a topic.
    async fn groups(&self, topic: &str) -> Result<Vec<String>>;

    /// The consumers of a group the broker knows of, with what each holds.
    async fn consumers(&self, _topic: &str, _group: &str) -> Result<Vec<ConsumerInfo>> {
        Err(Error::Unsupported { backend: self.backend(), capability: "listing consumers" })
    }

    /// Dead letters of a group, oldest first, after the id `after` (exclusive).
    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Sends dead letters back to their group (only that group) as fresh
    /// messages (attempt 1, reason removed). Returns how many were moved.
    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize>;

    /// Deletes dead letters: the given ids, or all of them when `ids` is `None`.
    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize>;

    /// The consumer named `consumer` (see [`ReceiveRequest::consumer`])
    /// stops receiving for the group; a worker calls it when it shuts down.
    /// Messages the backend pushed ahead to it (the AMQP prefetch) and never
    /// handed out go back to the broker, without counting an attempt.
    /// Nothing to do for pull-based backends.
    async fn stop_receiving(&self, _topic: &str, _group: &str, _consumer: &str) -> Result<()> {
        Ok(())
    }

    /// The idempotency store native to this backend, shared by every
    /// process using the same broker, if it has one.
    fn idempotency_store(&self) -> Option<Arc<dyn IdempotencyStore>> {
        None
    }

    /// The schedule store native to this backend, shared by every process
    /// using the same broker, if it has one.
    fn schedule_store(&self) -> Option<Arc<dyn crate::schedule::ScheduleStore>> {
        None
    }

    /// Closes connections. In-flight deliveries are not settled: they come
    /// back after their lease (or with the connection), like after a crash.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Checks a raw publish (see [`Broker::publish_raw`]) against the limit.
pub fn validate_raw(topic: &str, headers: &[(String, String)], payload: &[u8], limit: usize) -> Result<()> {
    crate::message::validate_name("topic", topic)?;
    let size = payload.len() + headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if size > limit {
        return Err(Error::MessageTooLarge { size, limit });
    }
    Ok(())
}

/// Checks a batch against the backend's limits before anything is
/// published: the one implementation of "oversized means nothing published".
pub fn validate_batch(topic: &str, messages: &[Message], caps: &Capabilities) -> Result<()> {
    crate::message::validate_name("topic", topic)?;
    for m in messages {
        m.validate()?;
        let size = m.encoded_size();
        if size > caps.max_message_bytes {
            return Err(Error::MessageTooLarge { size, limit: caps.max_message_bytes });
        }
    }
    Ok(())
}
