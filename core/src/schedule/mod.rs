//! Periodic schedules: when a schedule fires, and which of its ticks are
//! due. Every scheduler computes the same ticks from the same definition
//! (ticks come from the clock, never from a queue), so a tick is named by
//! its schedule and its instant, and is published once however many
//! schedulers run.
//!
//! [`Timetable`] is when a schedule fires (a cron expression in an IANA
//! time zone, or a fixed interval), [`due`] the ticks a scheduler publishes
//! (after a gap, by [`Misfire`] policy), [`Schedule`] the definition a
//! [`ScheduleStore`] keeps, and [`Scheduler`] what publishes the ticks. Cron expressions are
//! parsed and evaluated by `croner`, time zones by `jiff` (its bundled
//! copy of the tz database, so that schedulers on hosts with different
//! system zone files agree).
//!
//! Daylight saving, as users of cron expect: a local time that does not
//! exist (the spring-forward gap) fires once, at the first valid instant
//! after it; a local time that happens twice (fall back) fires once, the
//! first time; an expression over every hour fires on every real hour (23
//! on the spring day, 25 on the fall day).

mod definition;
mod misfire;
mod scheduler;
mod store;
mod table;
mod timetable;

#[cfg(test)]
mod scheduler_tests;
#[cfg(test)]
mod tests;

pub use definition::{Schedule, Stored, Upserted, When};
pub use misfire::{due, Due, Misfire, ON_TIME};
pub use scheduler::{Pass, Published, Scheduler, CLAIM_LEASE, REFRESH};
pub use store::{Finished, MemoryScheduleStore, ScheduleStore, TickClaim};
pub use table::{Entry, ScheduleTable};
pub use timetable::{Timetable, MIN_INTERVAL};

/// The idempotency key a tick is published with: `schedule:{name}:{ms}`,
/// the same from every scheduler and every language.
pub fn tick_key(name: &str, tick: std::time::SystemTime) -> String {
    format!("schedule:{name}:{}", crate::message::to_millis(tick))
}
