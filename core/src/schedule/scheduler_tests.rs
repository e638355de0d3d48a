//! Schedulers on a simulated clock over the memory backend: each tick
//! published once however many run, upserts that leave one schedule,
//! pausing and resuming.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::{Broker, Message};

async fn broker() -> Arc<dyn Broker> {
    let broker = crate::connect(&format!("memory://sched-{}", fastrand::u64(..))).await.unwrap();
    broker.ensure_group("reports", "g").await.unwrap();
    broker
}

fn every_second(name: &str) -> Schedule {
    let when = When::Every { every_ms: 1000, anchor_ms: None };
    Schedule::new(name, when, "reports", &Message::new("build").with_key("k")).unwrap()
}

#[tokio::test]
async fn three_schedulers_publish_each_tick_once() {
    let broker = broker().await;
    let store: Arc<dyn ScheduleStore> = Arc::new(MemoryScheduleStore::default());
    assert_eq!(store.upsert(&every_second("nightly")).await.unwrap(), Upserted::Created);
    let schedulers: Vec<Scheduler> = (0..3).map(|_| Scheduler::new(Arc::clone(&broker), Arc::clone(&store))).collect();
    // Twenty seconds from now, each scheduler waking every 100 ms, in turn.
    let start = SystemTime::now();
    let mut published = Vec::new();
    for step in 1..=200u64 {
        for (n, scheduler) in schedulers.iter().enumerate() {
            let now = start + Duration::from_millis(step * 100 + n as u64 * 7);
            published.extend(scheduler.run_once(now).await.unwrap().published);
        }
    }
    let mut ticks: Vec<SystemTime> = published.iter().map(|p| p.tick).collect();
    let all = ticks.len();
    ticks.dedup();
    assert_eq!(all, ticks.len(), "a tick published twice");
    assert!((19..=20).contains(&all), "{all} ticks in 20 s");
    assert!(ticks.windows(2).all(|w| w[1].duration_since(w[0]).unwrap() == Duration::from_secs(1)), "none missing");
    // Whole seconds: the same instants from every scheduler.
    assert!(ticks.iter().all(|t| t.duration_since(UNIX_EPOCH).unwrap().subsec_nanos() == 0));
    assert_eq!(broker.inspect("reports", "g").await.unwrap().ready, all as u64);
    let request = crate::ReceiveRequest {
        topic: "reports",
        group: "g",
        consumer: "c",
        max: 100,
        window: 100,
        wait: Duration::from_secs(1),
        lease: Duration::from_secs(30),
    };
    let got: Vec<Arc<Message>> = broker.receive(request).await.unwrap().into_iter().map(|d| d.message).collect();
    assert_eq!(got.len(), all);
    let keys: Vec<String> = got.iter().map(|m| m.idempotency_key.clone().unwrap()).collect();
    assert_eq!(keys[0], tick_key("nightly", ticks[0]));
    // Each message says which schedule and which tick it is for.
    for (m, tick) in got.iter().zip(&ticks) {
        assert_eq!((m.schedule.as_deref(), m.scheduled_for), (Some("nightly"), Some(*tick)));
    }
    assert!(got.iter().all(|m| m.key.as_deref() == Some("k") && &m.payload[..] == b"build"));
    let stored = &store.list().await.unwrap()[0];
    assert_eq!(stored.last_tick, ticks.last().copied());
    assert_eq!(stored.last_message_id.as_deref(), Some(published.last().unwrap().message_id.as_str()));
}

/// Three "processes" (connections of their own) on one database file, with
/// the file's schedule store: each tick once.
#[tokio::test]
async fn three_schedulers_on_one_sqlite_file_publish_each_tick_once() {
    let dir = std::env::temp_dir().join(format!("pb-sched-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("q.db").display());
    let mut schedulers = Vec::new();
    for _ in 0..3 {
        let broker = crate::connect(&url).await.unwrap();
        broker.ensure_group("reports", "g").await.unwrap();
        schedulers.push(Scheduler::for_broker(broker).unwrap());
    }
    let reader = crate::connect(&url).await.unwrap();
    let store = reader.schedule_store().unwrap();
    assert_eq!(store.upsert(&every_second("nightly")).await.unwrap(), Upserted::Created);
    assert_eq!(store.upsert(&every_second("nightly")).await.unwrap(), Upserted::Unchanged);
    let start = SystemTime::now();
    let mut published = Vec::new();
    for step in 1..=100u64 {
        for (n, scheduler) in schedulers.iter().enumerate() {
            let now = start + Duration::from_millis(step * 100 + n as u64 * 7);
            published.extend(scheduler.run_once(now).await.unwrap().published);
        }
    }
    let mut ticks: Vec<SystemTime> = published.iter().map(|p| p.tick).collect();
    let all = ticks.len();
    ticks.dedup();
    assert_eq!(all, ticks.len(), "a tick published twice");
    assert!((9..=10).contains(&all), "{all} ticks in 10 s");
    assert_eq!(reader.inspect("reports", "g").await.unwrap().ready, all as u64);
    let stored = store.list().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].last_tick, ticks.last().copied());
    assert_eq!(stored[0].schedule, every_second("nightly"));
    assert!(store.set_paused("nightly", true).await.unwrap());
    assert!(store.list().await.unwrap()[0].paused);
    assert!(store.remove("nightly").await.unwrap());
    assert!(store.list().await.unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn fifty_upserts_at_once_leave_one_schedule() {
    let store: Arc<dyn ScheduleStore> = Arc::new(MemoryScheduleStore::default());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.upsert(&every_second("nightly")).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| **o == Upserted::Created).count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == Upserted::Unchanged).count(), 49);
    assert_eq!(store.list().await.unwrap().len(), 1);
    // Another definition under the same name replaces it, and says so.
    let mut changed = every_second("nightly");
    changed.when = When::Cron { expression: "0 3 * * *".into(), zone: "Europe/Berlin".into() };
    assert_eq!(store.upsert(&changed).await.unwrap(), Upserted::Updated);
    assert_eq!(store.list().await.unwrap()[0].schedule, changed);
}

#[tokio::test]
async fn a_paused_schedule_publishes_nothing_and_resumes_without_catching_up() {
    let broker = broker().await;
    let store: Arc<dyn ScheduleStore> = Arc::new(MemoryScheduleStore::default());
    let scheduler = Scheduler::new(Arc::clone(&broker), Arc::clone(&store));
    store.upsert(&every_second("s")).await.unwrap();
    assert!(store.set_paused("s", true).await.unwrap());
    let later = SystemTime::now() + Duration::from_secs(5);
    assert!(scheduler.run_once(later).await.unwrap().published.is_empty());
    assert!(store.set_paused("s", false).await.unwrap());
    // Resumed now: the ticks of the paused seconds are not due.
    let pass = scheduler.run_once(SystemTime::now() + Duration::from_millis(1500)).await.unwrap();
    assert_eq!(pass.published.len(), 1, "{pass:?}");
    assert!(!store.set_paused("nothing", true).await.unwrap());
    assert!(store.remove("s").await.unwrap());
    assert!(!store.remove("s").await.unwrap());
}

#[test]
fn bad_schedules_are_refused_naming_the_option() {
    let m = Message::new("x");
    for (made, option) in [
        (Schedule::new("", When::Every { every_ms: 1000, anchor_ms: None }, "t", &m), "name"),
        (Schedule::new("s", When::Every { every_ms: 0, anchor_ms: None }, "t", &m), "every"),
        (Schedule::new("s", When::Cron { expression: "* *".into(), zone: "UTC".into() }, "t", &m), "cron"),
        (
            Schedule::new("s", When::Cron { expression: "* * * * *".into(), zone: "Nowhere/Else".into() }, "t", &m),
            "zone",
        ),
        (Schedule::new("s", When::Every { every_ms: 1000, anchor_ms: None }, "", &m), "topic"),
    ] {
        match made {
            Err(crate::Error::InvalidOption { name, .. }) => assert_eq!(name, option),
            other => panic!("{option}: {other:?}"),
        }
    }
}

#[test]
fn a_definition_round_trips_through_its_json() {
    let mut s = every_second("nightly");
    s.misfire = Misfire::All { cap: 5 };
    s.start = Some(UNIX_EPOCH + Duration::from_secs(1_000));
    s.headers.insert("tenant".into(), "acme".into());
    let back = Schedule::from_json("nightly", &s.definition_json(), s.payload.clone()).unwrap();
    assert_eq!(back, s);
}

#[tokio::test]
async fn a_running_scheduler_publishes_on_the_clock_and_stops_when_told() {
    let broker = broker().await;
    let scheduler = Scheduler::for_broker(Arc::clone(&broker)).unwrap();
    scheduler.store().upsert(&every_second("live")).await.unwrap();
    let runner = scheduler.clone();
    let run = tokio::spawn(async move { runner.run().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while broker.inspect("reports", "g").await.unwrap().ready < 2 {
        assert!(std::time::Instant::now() < deadline, "two ticks not published in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scheduler.shutdown();
    tokio::time::timeout(Duration::from_secs(10), run).await.expect("stops when told").unwrap().unwrap();
    let stored = &scheduler.store().list().await.unwrap()[0];
    assert!(stored.last_tick.is_some());
    let next = stored.next_run(SystemTime::now()).unwrap();
    assert!(next > SystemTime::now() - Duration::from_secs(1) && next <= SystemTime::now() + Duration::from_secs(2));
}

#[test]
fn options_as_every_language_gives_them() {
    let start = UNIX_EPOCH + Duration::from_secs(30);
    assert_eq!(
        When::from_options(None, Some(Duration::from_secs(60)), None, Some(start)).unwrap(),
        When::Every { every_ms: 60_000, anchor_ms: Some(30_000) }
    );
    assert_eq!(
        When::from_options(Some("0 3 * * *"), None, None, None).unwrap(),
        When::Cron { expression: "0 3 * * *".into(), zone: "UTC".into() }
    );
    for (cron, every, zone, option) in [
        (Some("* * * * *"), Some(Duration::from_secs(1)), None, "cron"),
        (None, None, None, "cron"),
        (None, Some(Duration::from_secs(1)), Some("UTC"), "zone"),
    ] {
        match When::from_options(cron, every, zone, None) {
            Err(crate::Error::InvalidOption { name, .. }) => assert_eq!(name, option),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(Misfire::from_name("all", None).unwrap(), Misfire::All { cap: Misfire::DEFAULT_CAP });
    assert_eq!(Misfire::from_name("skip", None).unwrap().name(), "skip");
    for (name, cap, option) in
        [("sometimes", None, "misfire"), ("all", Some(0), "misfire_cap"), ("once", Some(3), "misfire_cap")]
    {
        match Misfire::from_name(name, cap) {
            Err(crate::Error::InvalidOption { name, .. }) => assert_eq!(name, option),
            other => panic!("{other:?}"),
        }
    }
}

/// A scheduler that died holding a schedule's claim holds up its ticks
/// until the lease ends, then they go out in order: none is skipped.
#[tokio::test]
async fn a_claim_held_by_a_dead_scheduler_delays_ticks_but_loses_none() {
    let broker = broker().await;
    let store: Arc<dyn ScheduleStore> = Arc::new(MemoryScheduleStore::default());
    let mut schedule = every_second("s");
    schedule.misfire = Misfire::All { cap: 100 };
    store.upsert(&schedule).await.unwrap();
    let since = store.list().await.unwrap()[0].since;
    let first = Timetable::interval(Duration::from_secs(1), UNIX_EPOCH).unwrap().next_after(since).unwrap();
    // A scheduler claimed the schedule and died.
    let dead = TickClaim { name: "s".into(), seen: None };
    assert_eq!(store.claim(&[dead], "dead", Duration::from_millis(300)).await.unwrap(), vec![true]);
    let live = Scheduler::new(Arc::clone(&broker), Arc::clone(&store));
    let held = live.run_once(first + Duration::from_millis(2500)).await.unwrap();
    assert!(held.published.is_empty(), "nothing while the claim lives: {held:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = live.run_once(first + Duration::from_millis(2500)).await.unwrap();
    let ticks: Vec<SystemTime> = after.published.iter().map(|p| p.tick).collect();
    assert_eq!(ticks, vec![first, first + Duration::from_secs(1), first + Duration::from_secs(2)]);
}

/// A claim holds only while the schedule's last tick is the one the
/// scheduler saw: a scheduler that read the schedules before another
/// published does not publish the same tick again. (The backends' stores
/// run the same checks in the conformance scenarios.)
#[tokio::test]
async fn the_memory_store_refuses_a_stale_claim() {
    let store: Arc<dyn ScheduleStore> = Arc::new(MemoryScheduleStore::default());
    store.upsert(&every_second("stale")).await.unwrap();
    let unseen = TickClaim { name: "stale".into(), seen: None };
    assert_eq!(store.claim(std::slice::from_ref(&unseen), "a", CLAIM_LEASE).await.unwrap(), vec![true]);
    // Another owner, while a holds it.
    assert_eq!(store.claim(std::slice::from_ref(&unseen), "b", CLAIM_LEASE).await.unwrap(), vec![false]);
    let tick = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    store.finish("a", &[Finished { name: "stale".into(), last: Some((tick, "m1".into())) }]).await.unwrap();
    // Released, but b saw the schedule before the tick went out.
    assert_eq!(store.claim(&[unseen], "b", CLAIM_LEASE).await.unwrap(), vec![false]);
    let seen = TickClaim { name: "stale".into(), seen: Some(tick) };
    let gone = TickClaim { name: "gone".into(), seen: None };
    assert_eq!(store.claim(&[seen, gone], "b", CLAIM_LEASE).await.unwrap(), vec![true, false]);
    // An earlier tick recorded late does not move the schedule back.
    let earlier = Finished { name: "stale".into(), last: Some((tick - Duration::from_secs(1), "m0".into())) };
    store.finish("b", &[earlier]).await.unwrap();
    let stored = store.list().await.unwrap().into_iter().find(|s| s.schedule.name == "stale").unwrap();
    assert_eq!((stored.last_tick, stored.last_message_id.as_deref()), (Some(tick), Some("m1")));
    store.remove("stale").await.unwrap();
}
