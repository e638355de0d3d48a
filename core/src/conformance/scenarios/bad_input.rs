//! Input from outside Pillarbox's own producers: foreign messages,
//! malformed metadata, oversized messages and bad names.

use super::prelude::*;
use crate::wire;

/// A message from a plain client, with none of our headers, is consumed.
pub(crate) async fn foreign_message_consumed(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let before = SystemTime::now();
    ctx.broker
        .publish_raw(&ctx.topic, vec![("x-source".into(), "legacy".into())], Bytes::from_static(b"{\"plain\":true}"))
        .await
        .map_err(fail("publish_raw"))?;
    let r = Recorder::default();
    let w = ctx.start(&ctx.broker, "g", &r, Script::succeed(), quick())?;
    let ok = wait_for(Duration::from_secs(20), || r.count() == 1).await;
    let st = w.stop().await?;
    check!(ok, "foreign message not handled; stats {st:?}");
    let (job, _) = &r.jobs()[0];
    let m = &job.message;
    check!(&m.payload[..] == b"{\"plain\":true}", "payload {:?}", m.payload);
    check!(m.attempt == 1 && !m.id.is_empty(), "attempt {} id {}", m.attempt, m.id);
    check!(m.headers.get("x-source").map(String::as_str) == Some("legacy"), "headers {:?}", m.headers);
    check!(to_millis(m.published_at) + 1000 >= to_millis(before), "published_at should default to the broker's time");
    check!(settled(&ctx, "g").await?, "not settled");
    Ok(Outcome::Passed)
}

/// Malformed metadata: dead-lettered with the reason, no crash loop, and
/// the worker goes on with the next message.
pub(crate) async fn malformed_metadata_dead_lettered(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    ctx.broker
        .publish_raw(
            &ctx.topic,
            vec![(wire::ATTEMPT.into(), "many".into()), (wire::ID.into(), "bad-1".into())],
            Bytes::from_static(b"?"),
        )
        .await
        .map_err(fail("publish_raw"))?;
    publish(&ctx, vec![Message::new("good")]).await?;
    let r = Recorder::default();
    let w = ctx.start(&ctx.broker, "g", &r, Script::succeed(), quick())?;
    let ok = wait_for(Duration::from_secs(20), || w.worker.stats().dead_lettered == 1 && r.count() == 1).await;
    let st = w.stop().await?;
    check!(ok, "stats {st:?}, handled {:?}", r.payloads());
    check!(r.payloads() == vec!["good"], "handler saw {:?}", r.payloads());
    let dead = ctx.broker.list_dead_letters(&ctx.topic, "g", None, 10).await.map_err(fail("list"))?;
    check!(dead.len() == 1, "{} dead letters", dead.len());
    check!(dead[0].reason.cause == cause::MALFORMED, "cause {}", dead[0].reason.cause);
    check!(dead[0].reason.error_message.contains(wire::ATTEMPT), "reason {}", dead[0].reason.error_message);
    check!(&dead[0].message.payload[..] == b"?", "payload lost");
    Ok(Outcome::Passed)
}

/// Too large: a clear error, and nothing of the batch is published.
pub(crate) async fn oversized_message_rejected(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let limit = ctx.broker.capabilities().max_message_bytes;
    let huge = Message::new(vec![7u8; limit + 1]);
    let err = ctx.broker.publish(&ctx.topic, vec![Message::new("small"), huge]).await;
    match err {
        Err(crate::Error::MessageTooLarge { size, limit: l }) => {
            check!(size > l && l == limit, "sizes {size} {l}");
        }
        other => return Err(format!("expected MessageTooLarge, got {other:?}")),
    }
    let (ok, s) = stats_where(&ctx, "g", |s| s.ready == 0 && s.waiting == 0).await?;
    check!(ok, "something was published: {s:?}");
    let bad_header = ctx.broker.publish(&ctx.topic, vec![Message::new("x").with_header("pb-attempt", "9")]).await;
    check!(matches!(bad_header, Err(crate::Error::InvalidMessage(_))), "reserved header accepted: {bad_header:?}");
    let bad_topic = ctx.broker.publish("bad topic!", vec![Message::new("x")]).await;
    check!(matches!(bad_topic, Err(crate::Error::InvalidMessage(_))), "bad topic accepted: {bad_topic:?}");
    Ok(Outcome::Passed)
}

/// A topic or group name outside the allowed characters and length is
/// refused by every call, with the same clear error, and nothing changes.
pub(crate) async fn bad_names_refused(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let long = "x".repeat(201);
    let refused = |what: &str, r: crate::Result<()>| match r {
        Err(crate::Error::InvalidMessage(_)) => Ok(()),
        other => Err(format!("{what} accepted a bad name or failed otherwise: {other:?}")),
    };
    let b = &ctx.broker;
    let t = ctx.topic.as_str();
    for bad in ["", "a b", "a/b", "a}b", "a*", long.as_str()] {
        refused("ensure_group (topic)", b.ensure_group(bad, "g").await)?;
        refused("ensure_group (group)", b.ensure_group(t, bad).await)?;
        refused("publish", b.publish(bad, vec![Message::new("x")]).await)?;
        refused("inspect (group)", b.inspect(t, bad).await.map(drop))?;
        refused("groups", b.groups(bad).await.map(drop))?;
        refused("list_dead_letters (topic)", b.list_dead_letters(bad, "g", None, 10).await.map(drop))?;
        refused("list_dead_letters (group)", b.list_dead_letters(t, bad, None, 10).await.map(drop))?;
        refused("redrive_dead_letters", b.redrive_dead_letters(t, bad, &[]).await.map(drop))?;
        refused("purge_dead_letters", b.purge_dead_letters(t, bad, None).await.map(drop))?;
    }
    let (ok, s) = stats_where(&ctx, "g", |s| s.ready == 0 && s.waiting == 0 && s.dead_letters == 0).await?;
    check!(ok, "something changed: {s:?}");
    Ok(Outcome::Passed)
}
