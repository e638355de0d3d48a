//! The scheduler: publishes each schedule's due ticks, each once however
//! many schedulers run.
//!
//! Every scheduler computes the same ticks (see [`super::due`]). Before
//! publishing a tick it claims the tick's key in an idempotency store
//! shared by the schedulers, with a lease: only the holder publishes, then
//! marks the key done and records the tick in the schedule store. A
//! scheduler that dies holding a claim loses it when the lease ends, and
//! another publishes the tick; if it died after publishing, the message is
//! sent twice with the same idempotency key, and a worker whose
//! idempotency store is shared runs it once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{due, tick_key, ScheduleStore};
use crate::idempotency::{Claim, IdempotencyStore};
use crate::{Broker, Result};

/// How long a scheduler holds a tick's claim while it publishes it: a
/// scheduler killed while publishing delays that tick (and the schedule's
/// later ones) by at most this.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10);
/// How long a published tick's key is remembered as done.
pub const CLAIM_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The idempotency store scope of tick claims.
const SCOPE: &str = "pb-schedules";
/// The longest a running scheduler goes without reading the schedules
/// again (to see new, changed, paused and removed ones).
pub const REFRESH: Duration = Duration::from_secs(1);

/// A tick a scheduler published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The schedule.
    pub schedule: String,
    /// The tick's instant (also in the message's idempotency key).
    pub tick: SystemTime,
    /// The message's id.
    pub message_id: String,
}

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// The ticks this scheduler published.
    pub published: Vec<Published>,
    /// The soonest next tick of any schedule.
    pub next: Option<SystemTime>,
}

/// Publishes the due ticks of the schedules in a store. Clones share
/// one run: [`Scheduler::shutdown`] on any stops it.
#[derive(Debug, Clone)]
pub struct Scheduler {
    broker: Arc<dyn Broker>,
    store: Arc<dyn ScheduleStore>,
    claims: Arc<dyn IdempotencyStore>,
    owner: String,
    stop: CancellationToken,
}

impl Scheduler {
    /// A scheduler publishing through `broker` the schedules of `store`,
    /// claiming ticks in `claims` (shared by every scheduler of the store).
    pub fn new(broker: Arc<dyn Broker>, store: Arc<dyn ScheduleStore>, claims: Arc<dyn IdempotencyStore>) -> Self {
        let owner = format!("scheduler-{}-{:08x}", std::process::id(), fastrand::u32(..));
        Scheduler { broker, store, claims, owner, stop: CancellationToken::new() }
    }

    /// A scheduler of the schedules `broker` keeps, claiming ticks in its
    /// idempotency store: `UNSUPPORTED` on a backend with neither (for now
    /// RabbitMQ and Kafka).
    pub fn for_broker(broker: Arc<dyn Broker>) -> Result<Self> {
        let unsupported = || crate::Error::Unsupported { backend: broker.backend(), capability: "schedules" };
        let store = broker.schedule_store().ok_or_else(unsupported)?;
        let claims = broker.idempotency_store().ok_or_else(unsupported)?;
        Ok(Scheduler::new(broker, store, claims))
    }

    /// The store it reads.
    pub fn store(&self) -> &Arc<dyn ScheduleStore> {
        &self.store
    }

    /// Stops [`Scheduler::run`] (after the pass in progress).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// One pass at `now`: publishes every tick due, and says when the next is.
    pub async fn run_once(&self, now: SystemTime) -> Result<Pass> {
        let mut pass = Pass::default();
        for stored in self.store.list().await? {
            if stored.paused {
                continue;
            }
            let schedule = &stored.schedule;
            let table = match schedule.timetable() {
                Ok(table) => table,
                Err(e) => {
                    tracing::warn!(schedule = %schedule.name, error = %e, "a stored schedule is not valid; skipped");
                    continue;
                }
            };
            let due = due(&table, stored.due_after(), now, schedule.misfire, schedule.start, schedule.end);
            pass.next = match (pass.next, due.next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for tick in due.ticks {
                let key = tick_key(&schedule.name, tick);
                match self.claims.claim(SCOPE, &key, &self.owner, CLAIM_LEASE).await? {
                    Claim::Acquired => {}
                    // Published by another scheduler.
                    Claim::AlreadyDone => continue,
                    // Being published by another, which may have died
                    // holding it: no later tick goes out before this one
                    // (it would move the schedule past it for good). The
                    // next pass tries again, and once the lease has ended
                    // this scheduler publishes it.
                    Claim::Busy => break,
                }
                let message = schedule.message_for(tick);
                let id = message.id.clone();
                if let Err(e) = self.broker.publish(&schedule.topic, vec![message]).await {
                    let _ = self.claims.release(SCOPE, &key, &self.owner).await;
                    tracing::warn!(schedule = %schedule.name, error = %e, "could not publish a tick; it is tried again");
                    break;
                }
                self.claims.complete(SCOPE, &key, &self.owner, CLAIM_RETENTION).await?;
                self.store.advance(&schedule.name, tick, &id).await?;
                tracing::debug!(schedule = %schedule.name, message_id = %id, "published a tick");
                pass.published.push(Published { schedule: schedule.name.clone(), tick, message_id: id });
            }
        }
        Ok(pass)
    }

    /// Runs passes until [`Scheduler::shutdown`]: at each schedule's next
    /// tick, and at least every [`REFRESH`]. A pass that fails (the broker
    /// away) is logged and tried again at the next.
    pub async fn run(&self) -> Result<()> {
        let stop = &self.stop;
        while !stop.is_cancelled() {
            let now = SystemTime::now();
            let wait = match self.run_once(now).await {
                Ok(pass) => pass.next.and_then(|next| next.duration_since(SystemTime::now()).ok()).unwrap_or(REFRESH),
                Err(e) => {
                    tracing::warn!(error = %e, "a scheduler pass failed; trying again");
                    REFRESH
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.min(REFRESH)) => {}
                _ = stop.cancelled() => {}
            }
        }
        Ok(())
    }
}
