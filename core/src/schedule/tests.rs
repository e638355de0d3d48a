//! The timetable and the misfire policies on a simulated clock, across
//! both daylight-saving transitions in Europe/Berlin and America/New_York.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::civil::date;
use jiff::tz::TimeZone;

use super::*;

/// A local wall-clock time in `zone` (the earlier instant if it happens twice).
fn local(zone: &str, y: i16, m: i8, d: i8, h: i8, min: i8) -> SystemTime {
    let tz = TimeZone::get(zone).unwrap();
    let zoned = tz.to_ambiguous_zoned(date(y, m, d).at(h, min, 0, 0)).compatible().unwrap();
    SystemTime::from(zoned.timestamp())
}

/// `t` as local `HH:MM` with its UTC offset, for assertions.
fn wall(zone: &str, t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap();
    ts.to_zoned(TimeZone::get(zone).unwrap()).strftime("%H:%M%:z").to_string()
}

/// Runs a scheduler on a simulated clock from `from` to `to`, waking every
/// `step`, publishing what `due` gives and remembering the last tick, as
/// the scheduler loop does. Returns the ticks published.
fn simulate(table: &Timetable, from: SystemTime, to: SystemTime, step: Duration) -> Vec<SystemTime> {
    let mut last = from;
    let mut published = Vec::new();
    let mut now = from;
    while now < to {
        now = (now + step).min(to);
        let due = due(table, last, now, Misfire::Once, None, None);
        if let Some(tick) = due.ticks.last() {
            last = *tick;
        }
        published.extend(due.ticks);
    }
    published
}

/// A day: year, month, day.
type Day = (i16, i8, i8);

/// Each zone with its spring-forward and fall-back days in 2026.
const TRANSITIONS: [(&str, Day, Day); 2] =
    [("Europe/Berlin", (2026, 3, 29), (2026, 10, 25)), ("America/New_York", (2026, 3, 8), (2026, 11, 1))];

#[test]
fn a_daily_job_in_the_gap_or_the_fold_fires_once_on_each_transition_day() {
    for (zone, spring, fall) in TRANSITIONS {
        let table = Timetable::cron("30 2 * * *", zone).unwrap();
        for ((y, m, d), expected) in [(spring, "03:00"), (fall, "02:30")] {
            let day = local(zone, y, m, d, 0, 0);
            let next_day = day + Duration::from_secs(25 * 3600);
            let fired = simulate(&table, day, next_day, Duration::from_secs(599));
            let on_the_day: Vec<_> = fired.iter().filter(|t| **t < local(zone, y, m, d, 23, 59)).collect();
            assert_eq!(
                on_the_day.len(),
                1,
                "{zone} {y}-{m}-{d}: {:?}",
                fired.iter().map(|t| wall(zone, *t)).collect::<Vec<_>>()
            );
            // Spring: 02:30 does not exist; the first valid instant after it is 03:00.
            assert!(wall(zone, *on_the_day[0]).starts_with(expected), "{zone}: {}", wall(zone, *on_the_day[0]));
        }
    }
}

#[test]
fn an_hourly_job_fires_on_every_real_hour_23_and_25_times() {
    for (zone, spring, fall) in TRANSITIONS {
        let table = Timetable::cron("0 * * * *", zone).unwrap();
        for ((y, m, d), hours) in [(spring, 23), (fall, 25)] {
            let day = local(zone, y, m, d, 0, 0);
            let next = local(zone, y, m, d + 1, 0, 0);
            // Published from just before midnight, so that midnight counts.
            let fired =
                simulate(&table, day - Duration::from_secs(1), next - Duration::from_secs(1), Duration::from_secs(419));
            assert_eq!(fired.len(), hours, "{zone} {y}-{m}-{d}");
            let mut distinct = fired.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), hours, "no tick twice");
        }
    }
}

#[test]
fn intervals_tick_on_the_same_instants_for_every_scheduler() {
    let table = Timetable::interval(Duration::from_secs(10), UNIX_EPOCH).unwrap();
    let at = UNIX_EPOCH + Duration::from_millis(1_000_004_321);
    assert_eq!(table.next_after(at), Some(UNIX_EPOCH + Duration::from_secs(1_000_010)));
    assert_eq!(table.latest_at_or_before(at), Some(UNIX_EPOCH + Duration::from_secs(1_000_000)));
    // A tick is not after itself.
    let tick = UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(table.next_after(tick), Some(tick + Duration::from_secs(10)));
    assert_eq!(table.latest_at_or_before(tick), Some(tick));
    // Before its anchor, an interval's first tick is the anchor.
    let anchored = Timetable::interval(Duration::from_secs(60), tick).unwrap();
    assert_eq!(anchored.next_after(UNIX_EPOCH), Some(tick));
    assert_eq!(anchored.latest_at_or_before(tick - Duration::from_secs(1)), None);
}

#[test]
fn seconds_are_an_option_and_aliases_work() {
    let every_5s = Timetable::cron("*/5 * * * * *", "UTC").unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_000_001);
    assert_eq!(every_5s.next_after(at), Some(UNIX_EPOCH + Duration::from_secs(1_000_005)));
    let daily = Timetable::cron("@daily", "UTC").unwrap();
    assert_eq!(daily.next_after(at), Some(UNIX_EPOCH + Duration::from_secs(1_036_800)));
}

#[test]
fn after_a_gap_each_policy_publishes_what_it_says() {
    let minute = Timetable::cron("* * * * *", "UTC").unwrap();
    // Ten ticks, 1_000_020 to 1_000_560 (each a whole minute), the latest 20 s ago.
    let last = UNIX_EPOCH + Duration::from_secs(1_000_010);
    let now = UNIX_EPOCH + Duration::from_secs(1_000_580);
    let skip = due(&minute, last, now, Misfire::Skip, None, None);
    // The latest tick is 20 s late: on time. The nine before it are dropped.
    assert_eq!(skip.ticks, vec![UNIX_EPOCH + Duration::from_secs(1_000_560)]);
    let late = due(&minute, last, now + Duration::from_secs(35), Misfire::Skip, None, None);
    assert!(late.ticks.is_empty(), "a tick 55 s late is missed, not run: {late:?}");
    let once = due(&minute, last, now + Duration::from_secs(35), Misfire::Once, None, None);
    assert_eq!(once.ticks, vec![UNIX_EPOCH + Duration::from_secs(1_000_560)]);
    let all = due(&minute, last, now, Misfire::All { cap: 100 }, None, None);
    assert_eq!(all.ticks.len(), 10);
    assert!(all.ticks.windows(2).all(|w| w[1] - Duration::from_secs(60) == w[0]), "oldest first, a minute apart");
    let capped = due(&minute, last, now, Misfire::All { cap: 3 }, None, None);
    assert_eq!(capped.ticks, all.ticks[7..].to_vec(), "the last three");
    assert_eq!(all.next, Some(UNIX_EPOCH + Duration::from_secs(1_000_620)));
}

#[test]
fn a_long_gap_costs_what_the_policy_keeps() {
    let every_second = Timetable::cron("* * * * * *", "UTC").unwrap();
    let last = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let a_year_later = last + Duration::from_secs(365 * 24 * 3600);
    let began = std::time::Instant::now();
    let once = due(&every_second, last, a_year_later, Misfire::Once, None, None);
    let all = due(&every_second, last, a_year_later, Misfire::All { cap: 50 }, None, None);
    assert_eq!(once.ticks, vec![a_year_later]);
    assert_eq!(all.ticks.len(), 50);
    assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
}

#[test]
fn nothing_before_the_start_or_after_the_end() {
    let minute = Timetable::interval(Duration::from_secs(60), UNIX_EPOCH).unwrap();
    let start = UNIX_EPOCH + Duration::from_secs(600);
    let end = UNIX_EPOCH + Duration::from_secs(900);
    let early = due(
        &minute,
        UNIX_EPOCH,
        UNIX_EPOCH + Duration::from_secs(300),
        Misfire::All { cap: 10 },
        Some(start),
        Some(end),
    );
    assert!(early.ticks.is_empty());
    assert_eq!(early.next, Some(start), "the start itself is a tick");
    let during = due(
        &minute,
        UNIX_EPOCH,
        UNIX_EPOCH + Duration::from_secs(2000),
        Misfire::All { cap: 10 },
        Some(start),
        Some(end),
    );
    assert_eq!(during.ticks.len(), 6, "600, 660 ... 900");
    assert_eq!(during.next, None, "none after the end");
}

#[test]
fn bad_definitions_are_refused_naming_the_option() {
    for (result, option) in [
        (Timetable::cron("61 * * * *", "UTC"), "cron"),
        (Timetable::cron("every day", "UTC"), "cron"),
        (Timetable::cron("", "UTC"), "cron"),
        (Timetable::cron("0 0 30 2 *", "UTC"), "cron"),
        (Timetable::cron("0 0 * * *", "Mars/Olympus"), "zone"),
        (Timetable::interval(Duration::ZERO, UNIX_EPOCH), "every"),
        (Timetable::interval(Duration::from_millis(500), UNIX_EPOCH), "every"),
    ] {
        match result {
            Err(crate::Error::InvalidOption { name, reason }) => assert_eq!(name, option, "{reason}"),
            other => panic!("{option}: {other:?}"),
        }
    }
}

#[test]
fn a_tick_is_named_by_its_schedule_and_instant() {
    let tick = UNIX_EPOCH + Duration::from_millis(1_765_000_000_123);
    assert_eq!(tick_key("nightly-import", tick), "schedule:nightly-import:1765000000123");
}
