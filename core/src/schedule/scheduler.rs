//! The scheduler: publishes each schedule's due ticks, each once however
//! many schedulers run.
//!
//! Every scheduler computes the same ticks (see [`super::due`]). A pass
//! reads the schedules, claims in one call those with ticks due (see
//! [`ScheduleStore::claim`]), publishes the ticks of the ones it holds (one
//! batch per topic), and records them in one call. A scheduler that dies
//! holding claims loses them when the lease ends, and another publishes
//! the ticks; if it died after publishing, the messages go out twice with
//! the same idempotency keys, and a worker whose idempotency store is
//! shared runs each once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{due, Finished, ScheduleStore, TickClaim};
use crate::{Broker, Message, Result};

/// How long a scheduler holds its claims while it publishes: a scheduler
/// killed while publishing delays those schedules' ticks by at most this.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10);
/// The longest a running scheduler goes without reading the schedules
/// again (to see new, changed, paused and removed ones).
pub const REFRESH: Duration = Duration::from_secs(1);
/// The most messages one publish call carries (a pass catching up on many
/// missed ticks publishes several batches).
const PUBLISH_BATCH: usize = 500;

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
    owner: String,
    stop: CancellationToken,
}

impl Scheduler {
    /// A scheduler publishing through `broker` the schedules of `store`
    /// (shared by every scheduler of those schedules).
    pub fn new(broker: Arc<dyn Broker>, store: Arc<dyn ScheduleStore>) -> Self {
        let owner = format!("scheduler-{}-{:08x}", std::process::id(), fastrand::u32(..));
        Scheduler { broker, store, owner, stop: CancellationToken::new() }
    }

    /// A scheduler of the schedules `broker` keeps: `UNSUPPORTED` on a
    /// backend that keeps none (every built-in backend keeps them).
    pub fn for_broker(broker: Arc<dyn Broker>) -> Result<Self> {
        let unsupported = || crate::Error::Unsupported { backend: broker.backend(), capability: "schedules" };
        let store = broker.schedule_store().ok_or_else(unsupported)?;
        Ok(Scheduler::new(broker, store))
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
        let mut wanted = Vec::new();
        for stored in self.store.list().await? {
            if stored.paused {
                continue;
            }
            let after = stored.due_after();
            let schedule = stored.schedule;
            let table = match schedule.timetable() {
                Ok(table) => table,
                Err(e) => {
                    tracing::warn!(schedule = %schedule.name, error = %e, "a stored schedule is not valid; skipped");
                    continue;
                }
            };
            let due = due(&table, after, now, schedule.misfire, schedule.start, schedule.end);
            pass.next = match (pass.next, due.next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !due.ticks.is_empty() {
                wanted.push((TickClaim { name: schedule.name.clone(), seen: stored.last_tick }, schedule, due.ticks));
            }
        }
        if wanted.is_empty() {
            return Ok(pass);
        }
        let claims: Vec<TickClaim> = wanted.iter().map(|(claim, _, _)| claim.clone()).collect();
        let held = self.store.claim(&claims, &self.owner, CLAIM_LEASE).await?;
        // The held schedules' ticks, in order, by topic.
        let mut by_topic: BTreeMap<&str, Vec<(usize, Message)>> = BTreeMap::new();
        for (index, (_, schedule, ticks)) in wanted.iter().enumerate().filter(|(i, _)| held[*i]) {
            let messages = by_topic.entry(schedule.topic.as_str()).or_default();
            messages.extend(ticks.iter().map(|tick| (index, schedule.message_for(*tick))));
        }
        let mut last: BTreeMap<usize, (SystemTime, String)> = BTreeMap::new();
        let mut failed = Vec::new();
        for (topic, messages) in by_topic {
            for batch in messages.chunks(PUBLISH_BATCH) {
                // A schedule whose earlier batch failed publishes no later tick.
                let batch: Vec<&(usize, Message)> = batch.iter().filter(|(i, _)| !failed.contains(i)).collect();
                let sent = batch.iter().map(|(_, m)| m.clone()).collect();
                if let Err(e) = self.broker.publish(topic, sent).await {
                    tracing::warn!(topic, error = %e, "could not publish ticks; they are tried again");
                    failed.extend(batch.iter().map(|(i, _)| *i));
                    continue;
                }
                for (index, message) in batch {
                    let tick = message.scheduled_for.expect("a tick's message says its tick");
                    last.insert(*index, (tick, message.id.clone()));
                    let name = wanted[*index].1.name.clone();
                    tracing::debug!(schedule = %name, message_id = %message.id, "published a tick");
                    pass.published.push(Published { schedule: name, tick, message_id: message.id.clone() });
                }
            }
        }
        let finished: Vec<Finished> = (0..wanted.len())
            .filter(|i| held[*i])
            // What went out before a failure is recorded; the rest is due again.
            .map(|i| Finished { name: wanted[i].1.name.clone(), last: last.remove(&i) })
            .collect();
        self.store.finish(&self.owner, &finished).await?;
        Ok(pass)
    }

    /// Publishes the message of the schedule `name` now, outside its
    /// timetable (an operator's "run now"): as a tick at this instant, with
    /// that tick's idempotency key. The schedule's state stays as it is
    /// (its next tick comes as planned). Returns the message's id, `None`
    /// if there is no such schedule.
    pub async fn run_now(broker: &dyn Broker, name: &str) -> Result<Option<String>> {
        let store = broker
            .schedule_store()
            .ok_or(crate::Error::Unsupported { backend: broker.backend(), capability: "schedules" })?;
        let Some(stored) = store.list().await?.into_iter().find(|s| s.schedule.name == name) else {
            return Ok(None);
        };
        let message = stored.schedule.message_for(SystemTime::now());
        let id = message.id.clone();
        broker.publish(&stored.schedule.topic, vec![message]).await?;
        tracing::info!(schedule = %name, message_id = %id, "ran a schedule now");
        Ok(Some(id))
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
