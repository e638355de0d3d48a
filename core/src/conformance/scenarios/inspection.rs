//! The inspection figures at each step of a message's life.

use super::prelude::*;

/// The inspection figures are true at each step.
pub(crate) async fn inspection_figures(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let delayed = ctx.broker.capabilities().delayed_delivery;
    let mut batch = numbered(3);
    if delayed {
        batch.push(Message::new("later").with_delay(Duration::from_secs(600)));
    }
    publish(&ctx, batch).await?;
    let waiting0 = u64::from(delayed);
    let (ok, s) = stats_where(&ctx, "g", |s| {
        s.ready == 3 && s.in_flight == Some(0) && s.waiting == waiting0 && s.dead_letters == 0
    })
    .await?;
    check!(ok, "after publish: {s:?}");
    if ctx.broker.capabilities().oldest_age {
        check!(s.oldest_age.is_some(), "no oldest age with messages present");
    }
    // Up to `max` per call: a partitioned backend may hand out one
    // partition's messages before another's have been fetched.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && Instant::now() < deadline {
        let more = ctx
            .broker
            .receive(ReceiveRequest {
                topic: &ctx.topic,
                group: "g",
                consumer: "c",
                max: 2 - got.len(),
                window: 2 - got.len(),
                wait: Duration::from_secs(1),
                lease: Duration::from_secs(30),
            })
            .await
            .map_err(fail("receive"))?;
        got.extend(more);
    }
    check!(got.len() == 2, "received {}", got.len());
    // Where messages are delivered ahead, the third may be in flight too.
    let pushes = ctx.broker.capabilities().pushes_ahead;
    let (ok, s) = stats_where(&ctx, "g", |s| {
        let received = if pushes {
            s.in_flight >= Some(2) && s.ready + s.in_flight.unwrap_or(0) == 3
        } else {
            s.ready == 1 && s.in_flight == Some(2)
        };
        received && s.waiting == waiting0
    })
    .await?;
    check!(ok, "after receiving 2: {s:?}");
    // Who holds them: the consumer that received them, by its name.
    let deadline = Instant::now() + ctx.broker.capabilities().stats_delay * 2 + Duration::from_secs(1);
    loop {
        let consumers = ctx.broker.consumers(&ctx.topic, "g").await.map_err(fail("consumers"))?;
        let holder = consumers.iter().find(|c| c.name == "c");
        if holder.is_some_and(|c| c.holding.is_none_or(|n| n >= 2)) {
            break;
        }
        check!(Instant::now() < deadline, "consumers while `c` holds 2 messages: {consumers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.broker.ack(&got[..1]).await.map_err(fail("ack"))?;
    let mut next = Message::clone(&got[1].message);
    next.attempt += 1;
    next.deliver_at = Some(SystemTime::now() + Duration::from_secs(600));
    ctx.broker.retry(&got[1], next).await.map_err(fail("retry"))?;
    // Where the broker pushes ahead, the third message may sit in this
    // consumer's prefetch (in flight) rather than in the queue (ready).
    let (ok, s) = stats_where(&ctx, "g", |s| {
        let (ready, in_flight) =
            if pushes { (s.ready + s.in_flight.unwrap_or(0), Some(0)) } else { (s.ready, s.in_flight) };
        ready == 1 && in_flight == Some(0) && s.waiting == waiting0 + 1
    })
    .await?;
    check!(ok, "after ack + retry: {s:?}");
    let last = ctx
        .broker
        .receive(ReceiveRequest {
            topic: &ctx.topic,
            group: "g",
            consumer: "c",
            max: 5,
            window: 5,
            wait: Duration::from_secs(10),
            lease: Duration::from_secs(30),
        })
        .await
        .map_err(fail("receive"))?;
    check!(last.len() == 1, "received {}", last.len());
    let reason = crate::DeadLetterReason {
        topic: ctx.topic.clone(),
        group: "g".into(),
        attempts: 1,
        cause: cause::NOT_RETRYABLE.into(),
        error_kind: "Test".into(),
        error_message: "inspection".into(),
        first_failed_at: SystemTime::now(),
        last_failed_at: SystemTime::now(),
    };
    ctx.broker.dead_letter(&last[0], &reason).await.map_err(fail("dead_letter"))?;
    let (ok, s) = stats_where(&ctx, "g", |s| {
        s.ready == 0 && s.in_flight == Some(0) && s.waiting == waiting0 + 1 && s.dead_letters == 1
    })
    .await?;
    check!(ok, "after dead-letter: {s:?}");
    // A settled delivery cannot be settled twice.
    let again = ctx.broker.ack(&got[..1]).await;
    check!(matches!(again, Err(crate::Error::LeaseLost { .. })), "second ack of a settled delivery gave {again:?}");
    let groups = ctx.broker.groups(&ctx.topic).await.map_err(fail("groups"))?;
    check!(groups == vec!["g".to_string()], "groups {groups:?}");
    Ok(Outcome::Passed)
}
