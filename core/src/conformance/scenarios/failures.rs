//! Failures: retries with backoff, dead letters with their reason,
//! panics and timeouts, redrive and purge.

use super::prelude::*;
use crate::dead_letter::{self, DeadLetterFilter, RedriveOptions};

/// A failing handler is retried with growing waits; the handler sees its attempt number.
pub(crate) async fn retry_then_success(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("flaky")]).await?;
    let r = Recorder::default();
    let policy =
        RetryPolicy::retries(3).with_backoff(Duration::from_millis(300), 2.0, Duration::from_secs(5)).with_jitter(0.0);
    let flaky = Script::of(Behaviour::default().fails_through(2, Failing::error("error", "not yet")));
    let w = ctx.start(&ctx.broker, "g", &r, flaky, quick().retry(policy))?;
    let ok = wait_for(Duration::from_secs(20), || r.count() >= 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = w.stop().await?;
    check!(ok, "handler ran {} times, expected 3", r.count());
    let jobs = r.jobs();
    let attempts: Vec<u32> = jobs.iter().map(|(j, _)| j.attempt()).collect();
    check!(attempts == vec![1, 2, 3], "attempts {attempts:?}");
    check!(jobs.iter().all(|(j, _)| j.max_attempts == 4), "max_attempts not 4");
    let gap1 = jobs[1].1 - jobs[0].1;
    let gap2 = jobs[2].1 - jobs[1].1;
    // ms truncation on the wire may cost up to a millisecond.
    check!(gap1 >= Duration::from_millis(299), "first retry came after {gap1:?}, before the 300 ms backoff");
    check!(gap2 >= Duration::from_millis(599), "second retry came after {gap2:?}, before the 600 ms backoff");
    let hist = jobs[2].0.message.failures.clone().ok_or("attempt 3 carries no failure history")?;
    check!(hist.last_error == "not yet", "failure history {hist:?}");
    check!(st.retried == 2 && st.succeeded == 1 && st.dead_lettered == 0, "stats {st:?}");
    check!(settled(&ctx, "g").await?, "not settled: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}

/// After the last retry fails, the message is dead-lettered with the full reason.
pub(crate) async fn retries_exhausted_dead_letter(ctx: Ctx) -> Result<Outcome, Failure> {
    let sent = Message::new("doomed").with_header("tenant", "acme");
    publish_to_group(&ctx, "g", vec![sent.clone()]).await?;
    let r = Recorder::default();
    let before = SystemTime::now();
    let w = ctx.start(
        &ctx.broker,
        "g",
        &r,
        Script::of(Behaviour::default().always_fails(Failing::error("ValueError", "boom"))),
        quick().retry(
            RetryPolicy::retries(2)
                .with_backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1))
                .with_jitter(0.0),
        ),
    )?;
    let ok = wait_for(Duration::from_secs(20), || w.worker.stats().dead_lettered == 1).await;
    let st = w.stop().await?;
    check!(ok, "not dead-lettered; stats {st:?}");
    check!(r.count() == 3, "handler ran {} times, expected 3", r.count());
    let dead = ctx.broker.list_dead_letters(&ctx.topic, "g", None, 10).await.map_err(fail("list"))?;
    check!(dead.len() == 1, "{} dead letters", dead.len());
    let d = &dead[0];
    check!(d.message.id == sent.id && d.message.payload == sent.payload, "dead letter is not the message sent");
    check!(
        d.message.headers.get("tenant").map(String::as_str) == Some("acme"),
        "headers lost: {:?}",
        d.message.headers
    );
    let why = &d.reason;
    check!(why.topic == ctx.topic && why.group == "g", "origin {} {}", why.topic, why.group);
    check!(why.attempts == 3, "attempts {}", why.attempts);
    check!(why.cause == cause::RETRIES_EXHAUSTED, "cause {}", why.cause);
    check!(
        why.error_kind == "ValueError" && why.error_message == "boom",
        "error {} {}",
        why.error_kind,
        why.error_message
    );
    check!(why.first_failed_at <= why.last_failed_at, "first failure after last");
    check!(
        to_millis(why.first_failed_at) + 1 >= to_millis(before) && why.last_failed_at <= SystemTime::now(),
        "failure times out of range"
    );
    check!(why.last_failed_at > why.first_failed_at, "first and last failure should differ across retries");
    let (ok, s) =
        stats_where(&ctx, "g", |s| s.dead_letters == 1 && s.ready == 0 && s.in_flight == Some(0) && s.waiting == 0)
            .await?;
    check!(ok, "stats {s:?}");
    Ok(Outcome::Passed)
}

/// A not-retryable error dead-letters at once.
pub(crate) async fn not_retryable_dead_letters_at_once(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("bad input")]).await?;
    let r = Recorder::default();
    let w = ctx.start(
        &ctx.broker,
        "g",
        &r,
        Script::of(Behaviour::default().always_fails(Failing::fatal("ParseError", "cannot parse"))),
        quick(),
    )?;
    let ok = wait_for(Duration::from_secs(20), || w.worker.stats().dead_lettered == 1).await;
    let st = w.stop().await?;
    check!(ok, "not dead-lettered; stats {st:?}");
    check!(r.count() == 1, "handler ran {} times", r.count());
    let dead = ctx.broker.list_dead_letters(&ctx.topic, "g", None, 10).await.map_err(fail("list"))?;
    check!(dead.len() == 1, "{} dead letters", dead.len());
    check!(dead[0].reason.cause == cause::NOT_RETRYABLE, "cause {}", dead[0].reason.cause);
    check!(dead[0].reason.attempts == 1 && dead[0].reason.error_kind == "ParseError", "reason {:?}", dead[0].reason);
    Ok(Outcome::Passed)
}

/// A panic and a timeout fail the attempt, not the worker.
pub(crate) async fn panic_and_timeout_are_failures(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("panics once"), Message::new("hangs")]).await?;
    let r = Recorder::default();
    let script =
        Script::of(Behaviour::default().for_payload("panics once").fails_through(1, Failing::panic("handler bug")))
            .then(Behaviour::default().for_payload("hangs").waits(30_000));
    let opts = quick().concurrency(2).handler_timeout(Duration::from_millis(300)).retry(
        RetryPolicy::retries(1).with_backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1)).with_jitter(0.0),
    );
    let w = ctx.start(&ctx.broker, "g", &r, script, opts)?;
    let ok = wait_for(Duration::from_secs(20), || {
        let st = w.worker.stats();
        st.succeeded == 1 && st.dead_lettered == 1
    })
    .await;
    let st = w.stop().await?;
    let seen: Vec<(String, u32)> =
        r.jobs().iter().map(|(j, _)| (String::from_utf8_lossy(&j.message.payload).into_owned(), j.attempt())).collect();
    check!(ok, "stats {st:?}, calls {seen:?}");
    let dead = ctx.broker.list_dead_letters(&ctx.topic, "g", None, 10).await.map_err(fail("list"))?;
    check!(dead.len() == 1, "{} dead letters", dead.len());
    check!(dead[0].reason.error_kind == "timeout", "timeout kind {:?}", dead[0].reason);
    check!(dead[0].reason.attempts == 2, "timeout attempts {}", dead[0].reason.attempts);
    let panicked = seen.iter().filter(|(b, _)| b == "panics once").map(|(_, a)| *a).collect::<Vec<_>>();
    check!(panicked == vec![1, 2], "panicking message attempts {panicked:?}");
    Ok(Outcome::Passed)
}

/// Redrive sends dead letters back to their group (filtered, at a rate) to be
/// processed as fresh messages; purge deletes them.
pub(crate) async fn redrive_and_purge(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    ctx.broker.ensure_group(&ctx.topic, "other").await.map_err(fail("ensure_group"))?;
    let r = Recorder::default();
    let broken = Script::of(
        Behaviour::default().for_payload("purge").always_fails(Failing::fatal("Junk", "downstream is down")),
    )
    .then(Behaviour::default().always_fails(Failing::fatal("Outage", "downstream is down")));
    publish(
        &ctx,
        vec![Message::new("a"), Message::new("b"), Message::new("c"), Message::new("purge-1"), Message::new("purge-2")],
    )
    .await?;
    let w = ctx.start(&ctx.broker, "g", &r, broken, quick())?;
    let ok = wait_for(Duration::from_secs(20), || w.worker.stats().dead_lettered == 5).await;
    let st = w.stop().await?;
    check!(ok, "dead-lettered {}", st.dead_lettered);
    let (ok, s) = stats_where(&ctx, "g", |s| s.dead_letters == 5).await?;
    check!(ok, "dead letter count {s:?}");

    // Purge with a filter removes only the matches.
    let filter = DeadLetterFilter { error_kind: Some("Junk".into()), ..Default::default() };
    let purged = dead_letter::purge(ctx.broker.as_ref(), &ctx.topic, "g", &filter).await.map_err(fail("purge"))?;
    check!(purged == 2, "purged {purged}, expected 2");

    // Downstream is back.
    let w = ctx.start(&ctx.broker, "g", &r, Script::succeed(), quick())?;
    let started = Instant::now();
    let options = RedriveOptions { per_second: Some(5.0), ..Default::default() };
    let moved = dead_letter::redrive(ctx.broker.as_ref(), &ctx.topic, "g", &options).await.map_err(fail("redrive"))?;
    let took = started.elapsed();
    check!(moved == 3, "redrove {moved}, expected 3");
    check!(took >= Duration::from_millis(390), "3 redrives at 5/s took only {took:?}");
    let ok = wait_for(Duration::from_secs(20), || r.payloads().iter().filter(|p| p.len() == 1).count() == 6).await;
    let st = w.stop().await?;
    check!(ok, "after redrive handled {:?}; stats {st:?}", r.payloads());
    let fresh: Vec<u32> = r.jobs().iter().skip(5).map(|(j, _)| j.attempt()).collect();
    check!(fresh.iter().all(|a| *a == 1), "redriven messages should start at attempt 1: {fresh:?}");
    check!(
        r.jobs().iter().skip(5).all(|(j, _)| j.message.failures.is_none()),
        "redriven messages keep a failure history"
    );
    let (ok, s) = stats_where(&ctx, "g", |s| s.dead_letters == 0 && s.ready == 0 && s.in_flight == Some(0)).await?;
    check!(ok, "stats after redrive {s:?}");
    // Redrive went to `g` only: `other` still has exactly the 5 originals.
    let (ok, o) = stats_where(&ctx, "other", |o| o.ready == 5).await?;
    check!(ok, "the other group should hold just the 5 originals: {o:?}");

    // Purge without a filter removes everything.
    publish(&ctx, vec![Message::new("x")]).await?;
    let refuses = Script::of(Behaviour::default().always_fails(Failing::fatal("error", "no")));
    let w = ctx.start(&ctx.broker, "g", &Recorder::default(), refuses, quick())?;
    wait_for(Duration::from_secs(20), || w.worker.stats().dead_lettered == 1).await;
    w.stop().await?;
    let all = dead_letter::purge(ctx.broker.as_ref(), &ctx.topic, "g", &DeadLetterFilter::default())
        .await
        .map_err(fail("purge"))?;
    check!(all == 1, "purged {all}");
    check!(stats_where(&ctx, "g", |s| s.dead_letters == 0).await?.0, "dead letters left after purge");
    Ok(Outcome::Passed)
}
