//! Where schedules live: a small interface each backend implements (the
//! embedded database's table, a Redis hash...), and an in-process store.
//!
//! Schedulers take turns through the store: a scheduler claims the
//! schedules whose ticks are due (all of a pass's in one call), publishes
//! the ticks of those it holds, and finishes the claims with the last tick
//! published (one call again). A claim holds only while the schedule's last
//! tick is still the one the scheduler saw, so a tick another scheduler
//! published in between is never published again.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{Schedule, ScheduleTable, Stored, Upserted};
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

/// Schedules in this process's memory: for tests, and for one process.
#[derive(Default)]
pub struct MemoryScheduleStore {
    table: Mutex<ScheduleTable>,
}

impl fmt::Debug for MemoryScheduleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryScheduleStore").field("schedules", &self.table.lock().unwrap().list().len()).finish()
    }
}

#[async_trait]
impl ScheduleStore for MemoryScheduleStore {
    async fn upsert(&self, schedule: &Schedule) -> Result<Upserted> {
        self.table.lock().unwrap().upsert(schedule, SystemTime::now())
    }

    async fn list(&self) -> Result<Vec<Stored>> {
        Ok(self.table.lock().unwrap().list())
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        Ok(self.table.lock().unwrap().set_paused(name, paused, SystemTime::now()))
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        Ok(self.table.lock().unwrap().remove(name))
    }

    async fn claim(&self, claims: &[TickClaim], owner: &str, lease: Duration) -> Result<Vec<bool>> {
        Ok(self.table.lock().unwrap().claim(claims, owner, lease, SystemTime::now()))
    }

    async fn finish(&self, owner: &str, finished: &[Finished]) -> Result<()> {
        self.table.lock().unwrap().finish(owner, finished);
        Ok(())
    }
}
