//! Where schedules live: a small interface each backend implements (the
//! embedded database's table, a Redis hash...), and an in-process store.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

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

    /// Records that the tick `tick` was published as message `message_id`,
    /// unless a later tick was recorded already.
    async fn advance(&self, name: &str, tick: SystemTime, message_id: &str) -> Result<()>;
}

/// Schedules in this process's memory: for tests, and for one process.
#[derive(Default)]
pub struct MemoryScheduleStore {
    schedules: Mutex<BTreeMap<String, Stored>>,
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

    async fn advance(&self, name: &str, tick: SystemTime, message_id: &str) -> Result<()> {
        if let Some(stored) = self.schedules.lock().unwrap().get_mut(name) {
            if stored.last_tick.is_none_or(|last| last < tick) {
                stored.last_tick = Some(tick);
                stored.last_message_id = Some(message_id.to_string());
            }
        }
        Ok(())
    }
}
