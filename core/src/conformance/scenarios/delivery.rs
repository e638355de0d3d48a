//! Delivery: metadata round trips, fan-out, competing consumers, delays
//! and per-key order.

use std::collections::BTreeMap;

use super::prelude::*;

/// Every metadata field survives a round trip; a fresh message is attempt 1.
pub(crate) async fn round_trip_with_all_metadata(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let sent = Message::new(Bytes::from_static(b"\x00\x01binary\xffpayload"))
        .with_key("customer-7")
        .with_idempotency_key("order-7-created")
        .with_content_type("application/octet-stream")
        .with_header("tenant", "acme")
        .with_header("x-unicode", "café ✓")
        .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    publish(&ctx, vec![sent.clone()]).await?;
    let got = ctx
        .broker
        .receive(ReceiveRequest {
            topic: &ctx.topic,
            group: "g",
            consumer: "c1",
            max: 10,
            window: 10,
            wait: Duration::from_secs(10),
            lease: Duration::from_secs(10),
        })
        .await
        .map_err(fail("receive"))?;
    check!(got.len() == 1, "expected 1 delivery, got {}", got.len());
    let d = &got[0];
    check!(d.malformed.is_none(), "unexpected malformed: {:?}", d.malformed);
    let m = &d.message;
    check!(m.id == sent.id, "id {} != {}", m.id, sent.id);
    check!(m.payload == sent.payload, "payload changed");
    check!(m.key == sent.key, "key {:?}", m.key);
    check!(m.idempotency_key == sent.idempotency_key, "idempotency key {:?}", m.idempotency_key);
    check!(m.content_type == sent.content_type, "content type {:?}", m.content_type);
    check!(m.headers == sent.headers, "headers {:?}", m.headers);
    check!(m.traceparent == sent.traceparent, "traceparent {:?}", m.traceparent);
    check!(m.attempt == 1, "attempt {}", m.attempt);
    check!(to_millis(m.published_at) == to_millis(sent.published_at), "published_at changed");
    check!(*d.topic == *ctx.topic && &*d.group == "g", "topic/group {} {}", d.topic, d.group);
    ctx.broker.ack(&got).await.map_err(fail("ack"))?;
    check!(settled(&ctx, "g").await?, "not settled after ack: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}

/// Every group receives every message.
pub(crate) async fn fan_out_to_two_groups(ctx: Ctx) -> Result<Outcome, Failure> {
    for g in ["billing", "audit"] {
        ctx.broker.ensure_group(&ctx.topic, g).await.map_err(fail("ensure_group"))?;
    }
    publish(&ctx, numbered(10)).await?;
    let (a, b) = (Recorder::default(), Recorder::default());
    let wa = ctx.start(&ctx.broker, "billing", &a, Script::succeed(), quick())?;
    let wb = ctx.start(&ctx.broker, "audit", &b, Script::succeed(), quick())?;
    let ok = wait_for(Duration::from_secs(20), || a.count() >= 10 && b.count() >= 10).await;
    wa.stop().await?;
    wb.stop().await?;
    check!(ok, "billing saw {}, audit saw {}", a.count(), b.count());
    for (name, r) in [("billing", &a), ("audit", &b)] {
        let mut p = r.payloads();
        p.sort();
        p.dedup();
        check!(p.len() == 10 && r.count() == 10, "{name} saw {} messages ({} distinct)", r.count(), p.len());
    }
    Ok(Outcome::Passed)
}

/// Two consumers of one group share its work, and each message is handled
/// by one of them, once. Messages keep arriving until both have handled
/// some (a consumer that joins late, as on Kafka after a rebalance, still
/// gets its share), at a pace one consumer alone could barely keep up with.
pub(crate) async fn competing_consumers_handle_each_once(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let other = ctx.another_connection().await?;
    let (a, b) = (Recorder::default(), Recorder::default());
    let slow = Script::of(Behaviour::default().blocks(20));
    let wa = ctx.start(&ctx.broker, "g", &a, slow.clone(), quick().concurrency(2))?;
    let wb = ctx.start(&other, "g", &b, slow.clone(), quick().concurrency(2))?;
    // 10 messages every 100 ms: 100 a second, what two handlers of 20 ms
    // can do. Bounded: at most 600 messages, over about a minute.
    let mut sent = 0;
    while sent < 600 && (a.count() == 0 || b.count() == 0) {
        let batch = (sent..sent + 10).map(|i| Message::new(format!("m{i}"))).collect();
        publish(&ctx, batch).await?;
        sent += 10;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = wait_for(Duration::from_secs(60), || a.count() + b.count() >= sent).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wa.stop().await?;
    wb.stop().await?;
    let _ = other.close().await;
    let (by_a, by_b) = (a.count(), b.count());
    check!(ok, "handled {by_a} + {by_b} of {sent}");
    check!(by_a > 0 && by_b > 0, "one consumer did all the work: {by_a} + {by_b} of {sent}");
    let mut all = a.payloads();
    all.extend(b.payloads());
    let total = all.len();
    all.sort();
    all.dedup();
    check!(total == sent && all.len() == sent, "{total} handled, {} distinct (expected {sent} and {sent})", all.len());
    Ok(Outcome::Passed)
}

/// A delayed message waits on the broker and is not delivered early.
pub(crate) async fn delayed_publish_not_early(ctx: Ctx) -> Result<Outcome, Failure> {
    if !ctx.broker.capabilities().delayed_delivery {
        return Ok(Outcome::Skipped("no delayed delivery".into()));
    }
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let m = Message::new("later").with_delay(Duration::from_millis(1500));
    let due = m.deliver_at.unwrap();
    publish(&ctx, vec![m, Message::new("now")]).await?;
    let (ok, s) = stats_where(&ctx, "g", |s| s.waiting == 1 && s.ready == 1).await?;
    check!(ok, "right after publish: {s:?}");
    let r = Recorder::default();
    let w = ctx.start(&ctx.broker, "g", &r, Script::succeed(), quick())?;
    let ok = wait_for(Duration::from_secs(20), || r.count() == 2).await;
    w.stop().await?;
    check!(ok, "handled {:?}", r.payloads());
    let jobs = r.jobs();
    let later = jobs.iter().find(|(j, _)| &j.message.payload[..] == b"later").ok_or("delayed message missing")?;
    let seen_at = SystemTime::now() - later.1.elapsed();
    check!(to_millis(seen_at) >= to_millis(due), "delivered {} ms early", to_millis(due) - to_millis(seen_at));
    check!(r.payloads()[0] == "now", "the undelayed message should come first: {:?}", r.payloads());
    Ok(Outcome::Passed)
}

/// Messages with one key are handled in publish order, even with several
/// handlers running at once.
pub(crate) async fn per_key_ordering(ctx: Ctx) -> Result<Outcome, Failure> {
    if !ctx.broker.capabilities().ordered_delivery {
        return Ok(Outcome::Skipped("the backend does not promise ordered delivery".into()));
    }
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let mut batch = Vec::new();
    for i in 0..10 {
        for key in ["k1", "k2", "k3"] {
            batch.push(Message::new(format!("{key}:{i}")).with_key(key));
        }
    }
    publish(&ctx, batch).await?;
    // Each message waits a random while, so one key's messages run at once
    // would finish out of order.
    let mut random_waits = Script::succeed();
    for i in 0..10 {
        for key in ["k1", "k2", "k3"] {
            random_waits =
                random_waits.then(Behaviour::default().for_payload(&format!("{key}:{i}")).waits(fastrand::u64(0..15)));
        }
    }
    let r = Recorder::default();
    let w = ctx.start(&ctx.broker, "g", &r, random_waits, quick().concurrency(4).prefetch(8))?;
    let ok = wait_for(Duration::from_secs(20), || r.finished_payloads().len() == 30).await;
    w.stop().await?;
    let order = r.finished_payloads();
    check!(ok, "handled {}", order.len());
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for entry in order.iter() {
        let (k, i) = entry.split_once(':').unwrap();
        per_key.entry(k.to_string()).or_default().push(i.parse().unwrap());
    }
    for (k, seq) in &per_key {
        check!(seq.windows(2).all(|w| w[0] < w[1]), "key {k} handled out of order: {seq:?}");
    }
    Ok(Outcome::Passed)
}
