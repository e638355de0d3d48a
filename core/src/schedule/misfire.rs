//! Which ticks a scheduler publishes: the one just due, and after a gap
//! (every scheduler down, a machine asleep), the missed ones by policy.

use std::time::{Duration, SystemTime};

use super::Timetable;

/// How late a tick may be published and still count as on time: a
/// scheduler wakes for each tick, but a busy machine or a restart can hold
/// it up by a few seconds. Later than this, a tick was missed.
pub const ON_TIME: Duration = Duration::from_secs(30);

impl Misfire {
    /// The cap of `all` when none is given.
    pub const DEFAULT_CAP: u32 = 100;
}

/// What to do with ticks that were missed (no scheduler ran at their time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misfire {
    /// Drop them: only ticks published on time run.
    Skip,
    /// One run for all of them, at the latest (the default): a nightly
    /// import missed three nights runs once.
    #[default]
    Once,
    /// Each of them, oldest first, at most the last `cap`.
    All {
        /// The most missed ticks published after a gap.
        cap: u32,
    },
}

/// What is due at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The ticks to publish now, oldest first.
    pub ticks: Vec<SystemTime>,
    /// The first tick after `now`: when to look again.
    pub next: Option<SystemTime>,
}

/// The ticks of `table` after `last` (the last tick published, or when the
/// schedule was made) and up to `now`, by `misfire`, none before `start`
/// nor after `end`. Found backwards from `now`, so a schedule every second
/// left alone for a year costs what its policy keeps, not a year of ticks.
pub fn due(
    table: &Timetable,
    last: SystemTime,
    now: SystemTime,
    misfire: Misfire,
    start: Option<SystemTime>,
    end: Option<SystemTime>,
) -> Due {
    let keep = match misfire {
        Misfire::Skip | Misfire::Once => 1,
        Misfire::All { cap } => cap.max(1) as usize,
    };
    // Ticks after `floor` and at or before `ceiling` are due.
    let floor = match start {
        Some(start) if start > last => start.checked_sub(Duration::from_nanos(1)).unwrap_or(start),
        _ => last,
    };
    let ceiling = end.map_or(now, |end| end.min(now));
    let mut ticks = Vec::new();
    let mut at = ceiling;
    while ticks.len() < keep {
        match table.latest_at_or_before(at) {
            Some(tick) if tick > floor => {
                ticks.push(tick);
                match tick.checked_sub(Duration::from_nanos(1)) {
                    Some(before) => at = before,
                    None => break,
                }
            }
            _ => break,
        }
    }
    ticks.reverse();
    if misfire == Misfire::Skip {
        ticks.retain(|tick| now.duration_since(*tick).unwrap_or_default() <= ON_TIME);
    }
    let next = table.next_after(now.max(floor)).filter(|next| end.is_none_or(|end| *next <= end));
    Due { ticks, next }
}
