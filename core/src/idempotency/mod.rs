//! Idempotency stores: where the runtime records which idempotency keys are
//! being handled (a lease) and which are done (for a retention period).
//!
//! What each store guarantees:
//! - [`MemoryStore`]: one process only. Two workers in the same process
//!   never run one key twice; workers in other processes do not see it.
//! - the embedded store (`sqlite://PATH`): every process on one machine
//!   sharing the file. Survives restarts.
//! - the Redis store (with the `redis` feature): every process and machine
//!   sharing the Redis server.
//!
//! Even with a shared store, a handler whose process dies after its side
//! effect and before `complete` runs again after the lease expires: the
//! guarantee is effectively-once per key for handlers whose effect and
//! completion cannot be split, at-least-once otherwise.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};

mod memory;
pub use memory::MemoryStore;

/// Outcome of claiming a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key now and must `complete` or `release` it.
    Acquired,
    /// A handler already finished this key within the retention period.
    AlreadyDone,
    /// Another live owner holds the key right now.
    Busy,
}

/// A store of idempotency keys, scoped (the runtime uses `topic/group`).
#[async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug + 'static {
    /// Claims `key` for `owner` for `lease`, unless it is done or held by
    /// another owner whose lease has not expired.
    async fn claim(&self, scope: &str, key: &str, owner: &str, lease: Duration) -> Result<Claim>;

    /// Renews the lease; `false` if `owner` no longer holds the key.
    async fn renew(&self, scope: &str, key: &str, owner: &str, lease: Duration) -> Result<bool>;

    /// Marks the key done for `retention`.
    async fn complete(&self, scope: &str, key: &str, owner: &str, retention: Duration) -> Result<()>;

    /// Gives up the claim (after a failure), so the key may run again.
    async fn release(&self, scope: &str, key: &str, owner: &str) -> Result<()>;
}

/// Opens an idempotency store by URL: `memory://`, `sqlite://PATH`
/// or `redis://` (with the `redis` feature).
pub async fn open(url: &str) -> Result<Arc<dyn IdempotencyStore>> {
    let parsed = crate::url::BrokerUrl::parse(url)?;
    match parsed.scheme() {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(feature = "embedded")]
        "sqlite" => Ok(Arc::new(crate::backends::embedded::SqliteIdempotencyStore::open(&parsed).await?)),
        #[cfg(not(feature = "embedded"))]
        "sqlite" => Err(Error::BackendNotEnabled { scheme: "sqlite".into(), feature: "embedded" }),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let broker = crate::backends::redis::RedisBroker::connect(&parsed).await?;
            Ok(crate::broker::Broker::idempotency_store(&broker).expect("the Redis backend has a store"))
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" => Err(Error::BackendNotEnabled { scheme: parsed.scheme().to_string(), feature: "redis" }),
        other => Err(Error::UnknownScheme { scheme: other.to_string() }),
    }
}
