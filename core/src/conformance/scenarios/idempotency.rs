//! Idempotency keys: duplicates skipped, done keys honoured after a
//! crash, and racing consumers.

use super::prelude::*;

/// Two messages with one idempotency key: the handler runs once.
pub(crate) async fn idempotency_same_key_published_twice(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("charge").with_idempotency_key("charge-42")]).await?;
    let r = Recorder::default();
    let w = ctx.start(&ctx.broker, "g", &r, Script::succeed(), quick())?;
    wait_for(Duration::from_secs(20), || r.count() == 1).await;
    publish(
        &ctx,
        vec![
            Message::new("charge again").with_idempotency_key("charge-42"),
            Message::new("other").with_idempotency_key("charge-43"),
        ],
    )
    .await?;
    let ok = wait_for(Duration::from_secs(20), || w.worker.stats().duplicates == 1 && r.count() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = w.stop().await?;
    check!(ok, "stats {st:?}, handled {:?}", r.payloads());
    check!(r.payloads() == vec!["charge", "other"], "handled {:?}", r.payloads());
    check!(settled(&ctx, "g").await?, "not settled: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}

/// A message redelivered after its key was marked done (its consumer died
/// between finishing and acking) is acked without running again.
pub(crate) async fn idempotency_redelivery_after_done(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("once").with_idempotency_key("k-1")]).await?;
    let first = ctx.another_connection().await?;
    let got = first
        .receive(ReceiveRequest {
            topic: &ctx.topic,
            group: "g",
            consumer: "doomed",
            max: 1,
            window: 1,
            wait: Duration::from_secs(10),
            lease: Duration::from_millis(500),
        })
        .await
        .map_err(fail("receive"))?;
    check!(got.len() == 1, "received {}", got.len());
    // What a worker does after the handler succeeded: mark the key done...
    let store = ctx.shared_store();
    let scope = format!("{}/g", ctx.topic);
    store.claim(&scope, "k-1", "doomed", Duration::from_secs(5)).await.map_err(fail("claim"))?;
    store.complete(&scope, "k-1", "doomed", Duration::from_secs(600)).await.map_err(fail("complete"))?;
    // ...and then it dies before acking.
    let _ = first.close().await;
    let r = Recorder::default();
    let w = ctx.start(&ctx.broker, "g", &r, Script::succeed(), quick().idempotency_store(store))?;
    let ok = wait_for(Duration::from_secs(20), || w.worker.stats().duplicates == 1).await;
    let st = w.stop().await?;
    check!(ok, "redelivered copy not recognised; stats {st:?}");
    check!(r.count() == 0, "handler ran {} times on a done key", r.count());
    check!(settled(&ctx, "g").await?, "not settled: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}

/// Two consumers race on one key: the handler's effect happens once.
pub(crate) async fn idempotency_race_runs_once(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let other = ctx.another_connection().await?;
    let store = ctx.shared_store();
    // The effect is a success after a while: both consumers' handlers report to one record.
    let effects = Recorder::default();
    let slow = Script::of(Behaviour::default().waits(400));
    let opts = quick().idempotency_store(Arc::clone(&store));
    let wa = ctx.start(&ctx.broker, "g", &effects, slow.clone(), opts.clone())?;
    let wb = ctx.start(&other, "g", &effects, slow, opts)?;
    publish(
        &ctx,
        vec![Message::new("pay").with_idempotency_key("pay-1"), Message::new("pay").with_idempotency_key("pay-1")],
    )
    .await?;
    let ok = wait_for(Duration::from_secs(20), || {
        let (a, b) = (wa.worker.stats(), wb.worker.stats());
        a.succeeded + b.succeeded + a.duplicates + b.duplicates == 2
    })
    .await;
    let (sa, sb) = (wa.stop().await?, wb.stop().await?);
    let _ = other.close().await;
    check!(ok, "stats {sa:?} {sb:?}");
    check!(effects.succeeded() == 1, "effect happened {} times", effects.succeeded());
    check!(settled(&ctx, "g").await?, "not settled: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}
