//! When a schedule fires: a cron expression read in an IANA time zone, or
//! a fixed interval from an anchor.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::{Error, Result};

/// The shortest interval a schedule may have: ticks are named by their
/// instant, and a scheduler wakes for each.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The instants a schedule fires at.
#[derive(Clone)]
pub struct Timetable {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron { expression: String, cron: Box<Cron>, zone: TimeZone, zone_name: String },
    Interval { every: Duration, anchor: SystemTime },
}

impl Timetable {
    /// A cron expression (5 fields, or 6 with seconds first; `@daily`,
    /// `@hourly`... too) read in the IANA time zone `zone` (`UTC`,
    /// `Europe/Berlin`...).
    pub fn cron(expression: &str, zone: &str) -> Result<Self> {
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expression.trim()).map_err(|e| {
            Error::invalid_option("cron", format!("`{expression}` is not a cron expression ({e}); e.g. `30 2 * * *`"))
        })?;
        let tz = TimeZone::get(zone).map_err(|_| {
            Error::invalid_option("zone", format!("`{zone}` is not an IANA time zone (e.g. `UTC`, `Europe/Berlin`)"))
        })?;
        let table = Timetable {
            kind: Kind::Cron {
                expression: expression.trim().to_string(),
                cron: Box::new(cron),
                zone: tz,
                zone_name: zone.to_string(),
            },
        };
        // `0 0 30 2 *` parses but never fires: say so now, not at its first tick.
        if table.next_after(UNIX_EPOCH + Duration::from_secs(946_684_800)).is_none() {
            return Err(Error::invalid_option("cron", format!("`{expression}` never fires")));
        }
        Ok(table)
    }

    /// Every `every` (at least [`MIN_INTERVAL`]), at `anchor + k * every`:
    /// the same instants from every scheduler. An anchor at the epoch lines
    /// ticks up with the clock (every minute on the minute).
    pub fn interval(every: Duration, anchor: SystemTime) -> Result<Self> {
        if every < MIN_INTERVAL {
            return Err(Error::invalid_option("every", format!("must be at least 1 s, not {every:?}")));
        }
        Ok(Timetable { kind: Kind::Interval { every, anchor } })
    }

    /// The first tick strictly after `after`, or `None` when there is none
    /// (beyond the year 9999).
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        match &self.kind {
            Kind::Cron { cron, zone, .. } => {
                let at = Timestamp::try_from(after).ok()?.to_zoned(zone.clone());
                let next = cron.find_next_occurrence(&at, false).ok()?;
                Some(SystemTime::from(next.timestamp()))
            }
            Kind::Interval { every, anchor } => {
                let Ok(since) = after.duration_since(*anchor) else { return Some(*anchor) };
                let periods = since.as_nanos() / every.as_nanos() + 1;
                anchor.checked_add(Duration::from_nanos(u64::try_from(periods * every.as_nanos()).ok()?))
            }
        }
    }
}

impl Timetable {
    /// The last tick at or before `at`, or `None` when there is none.
    pub fn latest_at_or_before(&self, at: SystemTime) -> Option<SystemTime> {
        match &self.kind {
            Kind::Cron { cron, zone, .. } => {
                let at = Timestamp::try_from(at).ok()?.to_zoned(zone.clone());
                let previous = cron.find_previous_occurrence(&at, true).ok()?;
                Some(SystemTime::from(previous.timestamp()))
            }
            Kind::Interval { every, anchor } => {
                let since = at.duration_since(*anchor).ok()?;
                let periods = since.as_nanos() / every.as_nanos();
                anchor.checked_add(Duration::from_nanos(u64::try_from(periods * every.as_nanos()).ok()?))
            }
        }
    }
}

impl fmt::Debug for Timetable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `cron 30 2 * * * (Europe/Berlin)` or `every 10s`.
impl fmt::Display for Timetable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Cron { expression, zone_name, .. } => write!(f, "cron {expression} ({zone_name})"),
            Kind::Interval { every, .. } => write!(f, "every {every:?}"),
        }
    }
}

impl FromStr for Timetable {
    type Err = Error;

    /// A cron expression in UTC.
    fn from_str(expression: &str) -> Result<Self> {
        Timetable::cron(expression, "UTC")
    }
}
