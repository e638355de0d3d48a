//! Consumers that die or run long: redelivery as a new attempt, the
//! crash-loop limit, and leases kept fresh.

use super::prelude::*;

/// A consumer that disappears mid-message: the message reaches another
/// consumer, as a new attempt.
pub(crate) async fn consumer_dropped_mid_message(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("survivor")]).await?;
    let doomed = ctx.another_connection().await?;
    let got = doomed
        .receive(ReceiveRequest {
            topic: &ctx.topic,
            group: "g",
            consumer: "doomed",
            max: 1,
            window: 1,
            wait: Duration::from_secs(10),
            lease: Duration::from_millis(800),
        })
        .await
        .map_err(fail("receive"))?;
    check!(got.len() == 1, "received {}", got.len());
    let _ = doomed.close().await; // gone without settling
    let r = Recorder::default();
    let w = ctx.start(&ctx.broker, "g", &r, Script::succeed(), quick())?;
    let ok = wait_for(Duration::from_secs(30), || r.count() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.stop().await?;
    check!(ok, "message never reached the second consumer");
    let jobs = r.jobs();
    check!(jobs.len() == 1, "handled {} times", jobs.len());
    check!(jobs[0].0.attempt() == 2, "redelivery should be attempt 2, was {}", jobs[0].0.attempt());
    check!(settled(&ctx, "g").await?, "not settled: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}

/// A message whose consumers keep dying before settling it is dead-lettered
/// once its deliveries exceed the budget, without running the handler again:
/// no crash loop.
pub(crate) async fn crash_loop_dead_lettered(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("kills its consumer")]).await?;
    // Budget: 2 attempts. Two consumers take it and die.
    for attempt in 1..=2u32 {
        let doomed = ctx.another_connection().await?;
        let got = doomed
            .receive(ReceiveRequest {
                topic: &ctx.topic,
                group: "g",
                consumer: &format!("doomed-{attempt}"),
                max: 1,
                window: 1,
                wait: Duration::from_secs(15),
                lease: Duration::from_millis(300),
            })
            .await
            .map_err(fail("receive"))?;
        check!(got.len() == 1, "delivery {attempt}: received {}", got.len());
        check!(got[0].message.attempt == attempt, "delivery {attempt} came as attempt {}", got[0].message.attempt);
        let _ = doomed.close().await;
    }
    let r = Recorder::default();
    let opts = quick().lease(Duration::from_millis(300)).retry(RetryPolicy::retries(1).with_backoff(
        Duration::from_millis(50),
        2.0,
        Duration::from_secs(1),
    ));
    let w = ctx.start(&ctx.broker, "g", &r, Script::succeed(), opts)?;
    let ok = wait_for(Duration::from_secs(30), || w.worker.stats().dead_lettered == 1).await;
    let st = w.stop().await?;
    check!(ok, "not dead-lettered; stats {st:?}");
    check!(r.count() == 0, "handler ran {} times on a message over its budget", r.count());
    let dead = ctx.broker.list_dead_letters(&ctx.topic, "g", None, 10).await.map_err(fail("list"))?;
    check!(dead.len() == 1 && dead[0].reason.cause == cause::REDELIVERY_LIMIT, "dead letters {dead:?}");
    check!(dead[0].reason.attempts == 3, "attempts {}", dead[0].reason.attempts);
    Ok(Outcome::Passed)
}

/// A handler slower than the lease is not handed to a second consumer:
/// where the backend leases messages, because the runtime keeps the lease
/// fresh; where the connection holds them (RabbitMQ, Kafka), because it
/// does for as long as the handler runs.
pub(crate) async fn slow_handler_lease_renewed(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let other = ctx.another_connection().await?;
    let runs = Recorder::default();
    let slow = Script::of(Behaviour::default().waits(2500));
    let opts = quick().lease(Duration::from_millis(600));
    let wa = ctx.start(&ctx.broker, "g", &runs, slow.clone(), opts.clone())?;
    let wb = ctx.start(&other, "g", &runs, slow, opts)?;
    publish(&ctx, vec![Message::new("slow")]).await?;
    let ok = wait_for(Duration::from_secs(20), || wa.worker.stats().succeeded + wb.worker.stats().succeeded == 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    wa.stop().await?;
    wb.stop().await?;
    let _ = other.close().await;
    check!(ok, "slow message never finished");
    check!(runs.count() == 1, "slow handler ran {} times", runs.count());
    Ok(Outcome::Passed)
}
