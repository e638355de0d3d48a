//! Graceful shutdown: nothing lost, nothing charged an attempt, and no
//! neighbour disturbed.

use super::prelude::*;

/// Shutdown stops receiving, finishes or hands back what is in flight, and
/// loses nothing: a second worker handles the rest, each message once.
pub(crate) async fn graceful_shutdown_loses_nothing(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", numbered(20)).await?;
    let r = Recorder::default();
    let slow = Script::of(Behaviour::default().blocks(100));
    let w = ctx.start(&ctx.broker, "g", &r, slow.clone(), quick().concurrency(2).prefetch(4))?;
    wait_for(Duration::from_secs(20), || r.count() >= 4).await;
    let first = w.stop().await?;
    let done_first = r.count();
    check!(done_first < 20, "all messages done before shutdown; the test proves nothing");
    let (ok, s) = stats_where(&ctx, "g", |s| s.in_flight == Some(0) && s.ready as usize == 20 - done_first).await?;
    check!(ok, "after shutdown with {done_first} done: {s:?} {first:?}");
    let w2 = ctx.start(&ctx.broker, "g", &r, Script::succeed(), quick())?;
    let ok = wait_for(Duration::from_secs(20), || r.count() >= 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    w2.stop().await?;
    let mut payloads = r.payloads();
    let total = payloads.len();
    payloads.sort();
    payloads.dedup();
    check!(ok && total == 20 && payloads.len() == 20, "{total} handled, {} distinct", payloads.len());
    // Released messages were not charged an attempt.
    let charged: Vec<u32> = r.jobs().iter().map(|(j, _)| j.attempt()).filter(|a| *a != 1).collect();
    check!(charged.is_empty(), "released messages came back with attempts {charged:?}");
    check!(settled(&ctx, "g").await?, "not settled");
    Ok(Outcome::Passed)
}

/// Two workers of one group on one connection: stopping one hands back only
/// its own messages; the other goes on, and every message is handled once.
pub(crate) async fn worker_stopping_leaves_its_neighbour_alone(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", numbered(30)).await?;
    let r = Recorder::default();
    let slow = Script::of(Behaviour::default().blocks(30));
    let a = ctx.start(&ctx.broker, "g", &r, slow.clone(), quick().concurrency(2).prefetch(2))?;
    let b = ctx.start(&ctx.broker, "g", &r, slow.clone(), quick().concurrency(2).prefetch(2))?;
    wait_for(Duration::from_secs(20), || r.count() >= 8).await;
    a.stop().await?;
    let ok = wait_for(Duration::from_secs(30), || r.count() >= 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sb = b.stop().await?;
    let mut payloads = r.payloads();
    let total = payloads.len();
    payloads.sort();
    payloads.dedup();
    check!(ok && total == 30 && payloads.len() == 30, "{total} handled, {} distinct; B {sb:?}", payloads.len());
    check!(sb.settle_errors == 0, "the remaining worker lost settlements: {sb:?}");
    check!(settled(&ctx, "g").await?, "not settled: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}
