//! Periodic schedules: when a schedule fires, and which of its ticks are
//! due. Every scheduler computes the same ticks from the same definition
//! (ticks come from the clock, never from a queue), so a tick is named by
//! its schedule and its instant, and is published once however many
//! schedulers run.
//!
//! This module is the arithmetic: [`Timetable`] (a cron expression in an
//! IANA time zone, or a fixed interval) and [`due`] (the ticks a scheduler
//! publishes after a gap, by [`Misfire`] policy). Cron expressions are
//! parsed and evaluated by `croner`, time zones by `jiff` (its bundled
//! copy of the tz database, so that schedulers on hosts with different
//! system zone files agree).
//!
//! Daylight saving, as users of cron expect: a local time that does not
//! exist (the spring-forward gap) fires once, at the first valid instant
//! after it; a local time that happens twice (fall back) fires once, the
//! first time; an expression over every hour fires on every real hour (23
//! on the spring day, 25 on the fall day).

mod misfire;
mod timetable;

#[cfg(test)]
mod tests;

pub use misfire::{due, Due, Misfire, ON_TIME};
pub use timetable::{Timetable, MIN_INTERVAL};

/// The idempotency key a tick is published with: `schedule:{name}:{ms}`,
/// the same from every scheduler and every language.
pub fn tick_key(name: &str, tick: std::time::SystemTime) -> String {
    format!("schedule:{name}:{}", crate::message::to_millis(tick))
}
