//! # Pillarbox
//!
//! One producer/consumer API over Redis, RabbitMQ, Kafka and an embedded
//! store, with retries, dead letters and idempotency that behave the same on
//! every backend.
//!
//! - [`connect`] opens a broker from a URL (`memory://`, `sqlite://PATH`, ...).
//! - [`Broker`] is what a backend implements: primitives only.
//! - [`Worker`] runs handlers and holds all policy: the retry budget with
//!   backoff, dead-lettering with the reason, idempotency, leases,
//!   concurrency, timeouts and graceful shutdown.
//!
//! ```no_run
//! use pillarbox::{connect, Message, Worker, WorkerOptions, HandlerError};
//!
//! # async fn demo() -> pillarbox::Result<()> {
//! let broker = connect("sqlite://pillarbox.db").await?;
//! broker.ensure_group("emails", "sender").await?;
//! broker.publish("emails", vec![Message::new("hello").with_idempotency_key("welcome-42")]).await?;
//!
//! let worker = Worker::new(broker, "emails", "sender", |job: pillarbox::Job| async move {
//!     println!("attempt {}: {:?}", job.attempt(), job.message.payload);
//!     Ok::<(), HandlerError>(())
//! }, WorkerOptions::default())?;
//! let stop = worker.shutdown_token();
//! # stop.cancel();
//! worker.run().await?;
//! # Ok(()) }
//! ```

pub mod backends;
#[cfg(feature = "baseline")]
#[doc(hidden)]
pub mod baseline;
pub mod broker;
mod connect;
pub mod dead_letter;
pub mod error;
pub mod idempotency;
pub mod logs;
pub mod message;
pub mod runtime;
pub mod schedule;
pub mod surface;
pub mod tasks;
pub mod url;
pub mod wire;
pub mod worker;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use broker::{Broker, Capabilities, ConsumerInfo, Delivery, GroupStats, PartitionLag, Receipt, ReceiveRequest};
pub use connect::connect;
pub use dead_letter::{DeadLetter, DeadLetterFilter, DeadLetterReason, RedriveOptions};
pub use error::{Error, ErrorField, Result};
pub use idempotency::{Claim, IdempotencyStore};
pub use message::{FailureHistory, Message};
pub use worker::{
    Handler, HandlerError, Job, RetryPolicy, Worker, WorkerOptions, WorkerStats, MAX_CONCURRENCY, PARTITIONED_PREFETCH,
};

/// A hash map for keys of our own making (ids, topic and partition) looked
/// up on every message: ahash instead of SipHash, whose cost showed in
/// profiles. Keys are not attacker-chosen, so its fixed keys are enough.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<ahash::AHasher>>;
