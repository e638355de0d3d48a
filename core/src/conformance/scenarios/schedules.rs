//! Schedules: a store's claims are exclusive and current, and three
//! schedulers on three connections publish each tick once.

use super::prelude::*;
use crate::schedule::{tick_key, Finished, Schedule, Scheduler, TickClaim, When, CLAIM_LEASE};

fn every_second(name: &str, topic: &str) -> Result<Schedule, Failure> {
    let when = When::Every { every_ms: 1000, anchor_ms: None };
    Schedule::new(name, when, topic, &Message::new("tick")).map_err(fail("schedule"))
}

/// A claim is refused while another owner holds the schedule, and once a
/// tick was published after the claimant read the schedule (so no tick
/// goes out twice); a late record never moves a schedule back.
pub(crate) async fn schedule_claims_exclusive_and_current(ctx: Ctx) -> Result<Outcome, Failure> {
    let Some(store) = ctx.broker.schedule_store() else {
        return Ok(Outcome::Skipped("no schedule store".into()));
    };
    let name = format!("{}.claims", ctx.topic);
    store.upsert(&every_second(&name, &ctx.topic)?).await.map_err(fail("upsert"))?;
    let claim = |seen| vec![TickClaim { name: name.clone(), seen }];
    let held = |r: Result<Vec<bool>, crate::Error>| r.map_err(fail("claim"));
    check!(held(store.claim(&claim(None), "a", CLAIM_LEASE).await)? == vec![true], "a could not claim");
    check!(held(store.claim(&claim(None), "b", CLAIM_LEASE).await)? == vec![false], "b claimed what a holds");
    let tick = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let done = Finished { name: name.clone(), last: Some((tick, "m1".into())) };
    store.finish("a", &[done]).await.map_err(fail("finish"))?;
    check!(
        held(store.claim(&claim(None), "b", CLAIM_LEASE).await)? == vec![false],
        "b claimed with a stale view of the schedule"
    );
    let mut both = claim(Some(tick));
    both.push(TickClaim { name: format!("{name}.missing"), seen: None });
    let got = held(store.claim(&both, "b", CLAIM_LEASE).await)?;
    check!(got == vec![true, false], "claims of a current and a missing schedule: {got:?}");
    let earlier = Finished { name: name.clone(), last: Some((tick - Duration::from_secs(1), "m0".into())) };
    store.finish("b", &[earlier]).await.map_err(fail("finish"))?;
    let all = store.list().await.map_err(fail("list"))?;
    let stored = all.iter().find(|s| s.schedule.name == name).ok_or("the schedule is not listed")?;
    check!(
        stored.last_tick == Some(tick) && stored.last_message_id.as_deref() == Some("m1"),
        "a late record moved the schedule back: {stored:?}"
    );
    check!(store.remove(&name).await.map_err(fail("remove"))?, "not removed");
    Ok(Outcome::Passed)
}

/// Three schedulers on three connections, on a simulated clock, each
/// waking every 100 ms in turn for 10 s: every tick is published once,
/// none missing, each message saying its schedule and tick.
pub(crate) async fn schedule_ticks_published_once(ctx: Ctx) -> Result<Outcome, Failure> {
    let Some(store) = ctx.broker.schedule_store() else {
        return Ok(Outcome::Skipped("no schedule store".into()));
    };
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure group"))?;
    let name = format!("{}.ticks", ctx.topic);
    let mut schedulers = Vec::new();
    for _ in 0..3 {
        schedulers.push(Scheduler::for_broker(ctx.another_connection().await?).map_err(fail("scheduler"))?);
    }
    store.upsert(&every_second(&name, &ctx.topic)?).await.map_err(fail("upsert"))?;
    let start = SystemTime::now();
    let mut ticks = Vec::new();
    for step in 1..=100u64 {
        for (n, scheduler) in schedulers.iter().enumerate() {
            let now = start + Duration::from_millis(step * 100 + n as u64 * 7);
            let pass = scheduler.run_once(now).await.map_err(fail("pass"))?;
            ticks.extend(pass.published.into_iter().filter(|p| p.schedule == name).map(|p| p.tick));
        }
    }
    store.remove(&name).await.map_err(fail("remove"))?;
    let all = ticks.len();
    ticks.sort();
    ticks.dedup();
    check!(all == ticks.len(), "{} ticks published twice", all - ticks.len());
    check!((9..=10).contains(&all), "{all} ticks in 10 s");
    check!(
        ticks.windows(2).all(|w| w[1].duration_since(w[0]).ok() == Some(Duration::from_secs(1))),
        "a tick is missing: {ticks:?}"
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < all && Instant::now() < deadline {
        let request = ReceiveRequest {
            topic: &ctx.topic,
            group: "g",
            consumer: "c",
            max: 100,
            window: 100,
            wait: Duration::from_secs(1),
            lease: Duration::from_secs(60),
        };
        for d in ctx.broker.receive(request).await.map_err(fail("receive"))? {
            got.push(d.message);
        }
    }
    check!(got.len() == all, "{} messages for {all} ticks", got.len());
    let mut seen: Vec<SystemTime> = got.iter().filter_map(|m| m.scheduled_for).collect();
    seen.sort();
    check!(seen == ticks, "the messages' ticks {seen:?}, published {ticks:?}");
    for m in &got {
        let tick = m.scheduled_for.unwrap_or(SystemTime::UNIX_EPOCH);
        check!(m.schedule.as_deref() == Some(name.as_str()), "message for schedule {:?}", m.schedule);
        check!(m.idempotency_key == Some(tick_key(&name, tick)), "key {:?}", m.idempotency_key);
    }
    Ok(Outcome::Passed)
}
