//! Where schedules live: a small interface each backend implements (the
//! embedded database's table, a Redis hash...), and an in-process store.
//!
//! Schedulers take turns through the store: a scheduler claims the
//! schedules whose ticks are due (all of a pass's in one call), publishes
//! the ticks of those it holds, and finishes the claims with the last tick
//! published (one call again). A claim holds only while the schedule's last
//! tick is still the one the scheduler saw, so a tick another scheduler
//! published in between is never published again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{Schedule, Stored, Upserted};
use crate::Result;

/// Schedules by name, shared by every scheduler that uses the store.
/// Each call is atomic: concurrent upserts of one name leave one schedule.
#[async_trait]
pub trait ScheduleStore: Send + Sync + fmt::Debug + 'static {
    /// Creates the schedule, or replaces the definition of the one of that
    /// name (keeping its state; `since` moves to now, so the new timetable
    /// fires nothing from before the change), and says which.
    async fn upsert(&self, schedule: &Schedule) -> Result<Upserted>;

    /// Every schedule, by name.
    async fn list(&self) -> Result<Vec<Stored>>;

    /// Pauses or resumes; `false` if there is no such schedule. Resuming
    /// moves `since` to now: ticks missed while paused are not due.
    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool>;

    /// Removes it; `false` if there was none.
    async fn remove(&self, name: &str) -> Result<bool>;

    /// Claims schedules for `owner`, for `lease`, to publish their due
    /// ticks; says for each whether `owner` holds it: it exists, no other
    /// owner holds a live claim on it, and its last tick is still the one
    /// `seen` (none was published since the scheduler read it).
    async fn claim(&self, claims: &[TickClaim], owner: &str, lease: Duration) -> Result<Vec<bool>>;

    /// Ends `owner`'s claims: records each schedule's last published tick
    /// and its message id (unless a later one is recorded), and releases
    /// the claim.
    async fn finish(&self, owner: &str, finished: &[Finished]) -> Result<()>;
}

/// A schedule a scheduler means to publish ticks of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickClaim {
    /// The schedule.
    pub name: String,
    /// Its last tick when the scheduler read it.
    pub seen: Option<SystemTime>,
}

/// What a claimed schedule published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The schedule.
    pub name: String,
    /// Its last tick published and that message's id; `None` when nothing
    /// went out (the publish failed: the ticks are due again).
    pub last: Option<(SystemTime, String)>,
}

/// A live claim: who holds it, until when.
#[derive(Debug, Clone)]
struct Held {
    owner: String,
    until: SystemTime,
}

/// Schedules in this process's memory: for tests, and for one process.
#[derive(Default)]
pub struct MemoryScheduleStore {
    schedules: Mutex<BTreeMap<String, Stored>>,
    claims: Mutex<HashMap<String, Held>>,
}

impl fmt::Debug for MemoryScheduleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryScheduleStore").field("schedules", &self.schedules.lock().unwrap().len()).finish()
    }
}

#[async_trait]
impl ScheduleStore for MemoryScheduleStore {
    async fn upsert(&self, schedule: &Schedule) -> Result<Upserted> {
        schedule.check()?;
        let now = SystemTime::now();
        let mut all = self.schedules.lock().unwrap();
        match all.get_mut(&schedule.name) {
            Some(stored) if stored.schedule == *schedule => Ok(Upserted::Unchanged),
            Some(stored) => {
                stored.schedule = schedule.clone();
                stored.since = now;
                Ok(Upserted::Updated)
            }
            None => {
                let stored = Stored {
                    schedule: schedule.clone(),
                    paused: false,
                    last_tick: None,
                    last_message_id: None,
                    since: now,
                };
                all.insert(schedule.name.clone(), stored);
                Ok(Upserted::Created)
            }
        }
    }

    async fn list(&self) -> Result<Vec<Stored>> {
        Ok(self.schedules.lock().unwrap().values().cloned().collect())
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        let mut all = self.schedules.lock().unwrap();
        let Some(stored) = all.get_mut(name) else { return Ok(false) };
        if stored.paused && !paused {
            stored.since = SystemTime::now();
        }
        stored.paused = paused;
        Ok(true)
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        Ok(self.schedules.lock().unwrap().remove(name).is_some())
    }

    async fn claim(&self, claims: &[TickClaim], owner: &str, lease: Duration) -> Result<Vec<bool>> {
        let schedules = self.schedules.lock().unwrap();
        let mut held = self.claims.lock().unwrap();
        let now = SystemTime::now();
        Ok(claims
            .iter()
            .map(|claim| {
                let current = schedules.get(&claim.name).is_some_and(|s| s.last_tick == claim.seen);
                let free = held.get(&claim.name).is_none_or(|h| h.owner == owner || h.until <= now);
                if current && free {
                    held.insert(claim.name.clone(), Held { owner: owner.to_string(), until: now + lease });
                }
                current && free
            })
            .collect())
    }

    async fn finish(&self, owner: &str, finished: &[Finished]) -> Result<()> {
        let mut schedules = self.schedules.lock().unwrap();
        let mut held = self.claims.lock().unwrap();
        for done in finished {
            if let (Some(stored), Some((tick, id))) = (schedules.get_mut(&done.name), &done.last) {
                if stored.last_tick.is_none_or(|last| last < *tick) {
                    stored.last_tick = Some(*tick);
                    stored.last_message_id = Some(id.clone());
                }
            }
            if held.get(&done.name).is_some_and(|h| h.owner == owner) {
                held.remove(&done.name);
            }
        }
        Ok(())
    }
}
