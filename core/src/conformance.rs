//! The conformance suite: backend-agnostic scenarios that take a broker URL.
//!
//! Every backend must pass all of them; the Python and Node packages run the
//! same scenarios through their own API. Run them against any URL:
//!
//! ```sh
//! cargo run -p pillarbox --features conformance --example conformance -- sqlite:///tmp/check.db
//! ```
//!
//! Each scenario works on topics of its own (`conf.<scenario>.<random>`), so
//! a run never touches existing data. Scenarios that need a capability the
//! backend does not claim are skipped, and say so.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::broker::{Broker, ReceiveRequest};
use crate::dead_letter::{self, cause, DeadLetterFilter, RedriveOptions};
use crate::idempotency::{IdempotencyStore, MemoryStore};
use crate::message::{to_millis, Message};
use crate::wire;
use crate::worker::{Handler, HandlerError, Job, RetryPolicy, Worker, WorkerOptions, WorkerStats};

/// What a scenario concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// Not applicable to this backend, with the reason.
    Skipped(String),
}

/// A scenario's failure: which check, and what was seen.
pub type Failure = String;

type ScenarioFuture = Pin<Box<dyn Future<Output = Result<Outcome, Failure>> + Send>>;

/// A named scenario.
pub struct Scenario {
    /// Its name.
    pub name: &'static str,
    run: fn(Ctx) -> ScenarioFuture,
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every scenario, in a sensible order.
        pub fn scenarios() -> Vec<Scenario> {
            vec![$(Scenario { name: stringify!($name), run: |ctx| Box::pin($name(ctx)) }),*]
        }
    };
}

scenarios!(
    round_trip_with_all_metadata,
    fan_out_to_two_groups,
    competing_consumers_handle_each_once,
    retry_then_success,
    retries_exhausted_dead_letter,
    not_retryable_dead_letters_at_once,
    panic_and_timeout_are_failures,
    redrive_and_purge,
    idempotency_same_key_published_twice,
    idempotency_redelivery_after_done,
    idempotency_race_runs_once,
    consumer_dropped_mid_message,
    crash_loop_dead_lettered,
    slow_handler_lease_renewed,
    delayed_publish_not_early,
    per_key_ordering,
    inspection_figures,
    foreign_message_consumed,
    malformed_metadata_dead_lettered,
    oversized_message_rejected,
    graceful_shutdown_loses_nothing,
    worker_stopping_leaves_its_neighbour_alone,
);

/// Runs one scenario by name against `url`.
pub async fn run_scenario(url: &str, name: &str) -> Result<Outcome, Failure> {
    let scenario =
        scenarios().into_iter().find(|s| s.name == name).ok_or_else(|| format!("no scenario named `{name}`"))?;
    let ctx = Ctx::new(url, name).await?;
    let broker = Arc::clone(&ctx.broker);
    let result = tokio::time::timeout(Duration::from_secs(120), (scenario.run)(ctx))
        .await
        .unwrap_or_else(|_| Err(format!("scenario `{name}` did not finish within 120 s")));
    let _ = broker.close().await;
    result
}

/// Runs every scenario against `url`, one after the other, and returns
/// each name with its result.
pub async fn run_all(url: &str) -> Vec<(&'static str, Result<Outcome, Failure>)> {
    let mut results = Vec::new();
    for s in scenarios() {
        let r = run_scenario(url, s.name).await;
        results.push((s.name, r));
    }
    results
}

/// What a scenario is given.
pub struct Ctx {
    url: String,
    broker: Arc<dyn Broker>,
    topic: String,
}

impl Ctx {
    async fn new(url: &str, scenario: &str) -> Result<Ctx, Failure> {
        let broker = crate::connect(url).await.map_err(|e| format!("connect: {e}"))?;
        let suffix = &uuid::Uuid::now_v7().simple().to_string()[20..];
        let short: String = scenario.chars().take(40).collect();
        Ok(Ctx { url: url.to_string(), broker, topic: format!("conf.{short}.{suffix}") })
    }

    /// A second, independent connection to the same broker.
    async fn another_connection(&self) -> Result<Arc<dyn Broker>, Failure> {
        crate::connect(&self.url).await.map_err(|e| format!("second connection: {e}"))
    }

    /// The idempotency store workers of this broker share across connections.
    fn shared_store(&self) -> Arc<dyn IdempotencyStore> {
        self.broker.idempotency_store().unwrap_or_else(|| Arc::new(MemoryStore::new()))
    }
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{} (at {}:{})", format!($($fmt)+), file!(), line!()));
        }
    };
}

fn fail<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Failure {
    move |e| format!("{what}: {e}")
}

/// Options that keep scenarios quick: short waits, leases and backoffs.
fn quick() -> WorkerOptions {
    WorkerOptions::default()
        .poll_wait(Duration::from_millis(100))
        .lease(Duration::from_secs(2))
        .shutdown_grace(Duration::from_secs(10))
        .busy_key_delay(Duration::from_millis(200))
        .retry(
            RetryPolicy::retries(3)
                .with_backoff(Duration::from_millis(100), 2.0, Duration::from_secs(1))
                .with_jitter(0.0),
        )
}

/// A running worker and the task driving it.
struct Running {
    worker: Worker,
    task: tokio::task::JoinHandle<crate::Result<()>>,
}

impl Running {
    async fn stop(self) -> Result<WorkerStats, Failure> {
        self.worker.shutdown();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => Ok(self.worker.stats()),
            Ok(Ok(Err(e))) => Err(format!("worker ended with an error: {e}")),
            Ok(Err(e)) => Err(format!("worker task failed: {e}")),
            Err(_) => Err("worker did not shut down within 30 s".into()),
        }
    }
}

fn start<H: Handler>(
    broker: &Arc<dyn Broker>,
    topic: &str,
    group: &str,
    handler: H,
    options: WorkerOptions,
) -> Result<Running, Failure> {
    let worker = Worker::new(Arc::clone(broker), topic, group, handler, options).map_err(fail("worker options"))?;
    let runner = worker.clone();
    let task = tokio::spawn(async move { runner.run().await });
    Ok(Running { worker, task })
}

/// Polls `cond` until it holds or `limit` passes.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// A handler that records every job it sees, then answers with `reply`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(Job, Instant)>>>,
}

impl Recorder {
    fn handler<F>(&self, reply: F) -> impl Handler
    where
        F: Fn(&Job) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        let seen = Arc::clone(&self.seen);
        let reply = Arc::new(reply);
        move |job: Job| {
            let seen = Arc::clone(&seen);
            let reply = Arc::clone(&reply);
            async move {
                let answer = reply(&job);
                seen.lock().unwrap().push((job, Instant::now()));
                answer
            }
        }
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn jobs(&self) -> Vec<(Job, Instant)> {
        self.seen.lock().unwrap().clone()
    }
    fn payloads(&self) -> Vec<String> {
        self.jobs().iter().map(|(j, _)| String::from_utf8_lossy(&j.message.payload).into_owned()).collect()
    }
}

fn numbered(n: usize) -> Vec<Message> {
    (0..n).map(|i| Message::new(format!("m{i}"))).collect()
}

async fn publish(ctx: &Ctx, messages: Vec<Message>) -> Result<(), Failure> {
    ctx.broker.publish(&ctx.topic, messages).await.map_err(fail("publish"))
}

async fn stats(ctx: &Ctx, group: &str) -> Result<crate::GroupStats, Failure> {
    ctx.broker.inspect(&ctx.topic, group).await.map_err(fail("inspect"))
}

/// Inspection figures that satisfy `expect`, waiting up to the backend's
/// stated staleness (`Capabilities::stats_delay`) for them to get there;
/// the last figures seen when they never do.
async fn stats_where(
    ctx: &Ctx,
    group: &str,
    expect: impl Fn(&crate::GroupStats) -> bool,
) -> Result<(bool, crate::GroupStats), Failure> {
    let deadline = Instant::now() + ctx.broker.capabilities().stats_delay + Duration::from_millis(200);
    loop {
        let s = stats(ctx, group).await?;
        if expect(&s) || Instant::now() >= deadline {
            return Ok((expect(&s), s));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn settled(ctx: &Ctx, group: &str) -> Result<bool, Failure> {
    Ok(stats_where(ctx, group, |s| s.ready == 0 && s.in_flight == 0 && s.waiting == 0).await?.0)
}

// ---------------------------------------------------------------- scenarios

/// Every metadata field survives a round trip; a fresh message is attempt 1.
async fn round_trip_with_all_metadata(ctx: Ctx) -> Result<Outcome, Failure> {
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
async fn fan_out_to_two_groups(ctx: Ctx) -> Result<Outcome, Failure> {
    for g in ["billing", "audit"] {
        ctx.broker.ensure_group(&ctx.topic, g).await.map_err(fail("ensure_group"))?;
    }
    publish(&ctx, numbered(10)).await?;
    let (a, b) = (Recorder::default(), Recorder::default());
    let wa = start(&ctx.broker, &ctx.topic, "billing", a.handler(|_| Ok(())), quick())?;
    let wb = start(&ctx.broker, &ctx.topic, "audit", b.handler(|_| Ok(())), quick())?;
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

/// Two consumers of one group share the messages; each is handled once.
async fn competing_consumers_handle_each_once(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let other = ctx.another_connection().await?;
    publish(&ctx, numbered(40)).await?;
    let (a, b) = (Recorder::default(), Recorder::default());
    let slow = |_: &Job| {
        std::thread::sleep(Duration::from_millis(5));
        Ok(())
    };
    let wa = start(&ctx.broker, &ctx.topic, "g", a.handler(slow), quick().concurrency(2))?;
    let wb = start(&other, &ctx.topic, "g", b.handler(slow), quick().concurrency(2))?;
    let ok = wait_for(Duration::from_secs(30), || a.count() + b.count() >= 40).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wa.stop().await?;
    wb.stop().await?;
    let _ = other.close().await;
    check!(ok, "handled {} + {} of 40", a.count(), b.count());
    let mut all = a.payloads();
    all.extend(b.payloads());
    let total = all.len();
    all.sort();
    all.dedup();
    check!(total == 40 && all.len() == 40, "{total} handled, {} distinct (expected 40 and 40)", all.len());
    Ok(Outcome::Passed)
}

/// A failing handler is retried with growing waits; the handler sees its attempt number.
async fn retry_then_success(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("flaky")]).await?;
    let r = Recorder::default();
    let policy =
        RetryPolicy::retries(3).with_backoff(Duration::from_millis(300), 2.0, Duration::from_secs(5)).with_jitter(0.0);
    let w = start(
        &ctx.broker,
        &ctx.topic,
        "g",
        r.handler(|job| if job.attempt() < 3 { Err(HandlerError::retryable("not yet")) } else { Ok(()) }),
        quick().retry(policy),
    )?;
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

async fn publish_to_group(ctx: &Ctx, group: &str, messages: Vec<Message>) -> Result<(), Failure> {
    ctx.broker.ensure_group(&ctx.topic, group).await.map_err(fail("ensure_group"))?;
    publish(ctx, messages).await
}

/// After the last retry fails, the message is dead-lettered with the full reason.
async fn retries_exhausted_dead_letter(ctx: Ctx) -> Result<Outcome, Failure> {
    let sent = Message::new("doomed").with_header("tenant", "acme");
    publish_to_group(&ctx, "g", vec![sent.clone()]).await?;
    let r = Recorder::default();
    let before = SystemTime::now();
    let w = start(
        &ctx.broker,
        &ctx.topic,
        "g",
        r.handler(|_| Err(HandlerError::retryable("boom").with_kind("ValueError"))),
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
        stats_where(&ctx, "g", |s| s.dead_letters == 1 && s.ready == 0 && s.in_flight == 0 && s.waiting == 0).await?;
    check!(ok, "stats {s:?}");
    Ok(Outcome::Passed)
}

/// A not-retryable error dead-letters at once.
async fn not_retryable_dead_letters_at_once(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("bad input")]).await?;
    let r = Recorder::default();
    let w = start(
        &ctx.broker,
        &ctx.topic,
        "g",
        r.handler(|_| Err(HandlerError::fatal("cannot parse").with_kind("ParseError"))),
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
async fn panic_and_timeout_are_failures(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("panics once"), Message::new("hangs")]).await?;
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
    let (c, s) = (Arc::clone(&calls), Arc::clone(&seen));
    let handler = move |job: Job| {
        let (c, s) = (Arc::clone(&c), Arc::clone(&s));
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            let body = String::from_utf8_lossy(&job.message.payload).into_owned();
            s.lock().unwrap().push((body.clone(), job.attempt()));
            if body == "panics once" && job.attempt() == 1 {
                panic!("handler bug");
            }
            if body == "hangs" {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok(())
        }
    };
    let opts = quick().concurrency(2).handler_timeout(Duration::from_millis(300)).retry(
        RetryPolicy::retries(1).with_backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1)).with_jitter(0.0),
    );
    let w = start(&ctx.broker, &ctx.topic, "g", handler, opts)?;
    let ok = wait_for(Duration::from_secs(20), || {
        let st = w.worker.stats();
        st.succeeded == 1 && st.dead_lettered == 1
    })
    .await;
    let st = w.stop().await?;
    check!(ok, "stats {st:?}, calls {:?}", seen.lock().unwrap());
    let dead = ctx.broker.list_dead_letters(&ctx.topic, "g", None, 10).await.map_err(fail("list"))?;
    check!(dead.len() == 1, "{} dead letters", dead.len());
    check!(dead[0].reason.error_kind == "timeout", "timeout kind {:?}", dead[0].reason);
    check!(dead[0].reason.attempts == 2, "timeout attempts {}", dead[0].reason.attempts);
    let panicked = seen.lock().unwrap().iter().filter(|(b, _)| b == "panics once").map(|(_, a)| *a).collect::<Vec<_>>();
    check!(panicked == vec![1, 2], "panicking message attempts {panicked:?}");
    Ok(Outcome::Passed)
}

/// Redrive sends dead letters back to their group (filtered, at a rate) to be
/// processed as fresh messages; purge deletes them.
async fn redrive_and_purge(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    ctx.broker.ensure_group(&ctx.topic, "other").await.map_err(fail("ensure_group"))?;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let r = Recorder::default();
    let b = Arc::clone(&broken);
    let handler = r.handler(move |job| {
        let body = String::from_utf8_lossy(&job.message.payload).into_owned();
        if b.load(Ordering::SeqCst) {
            let kind = if body.starts_with("purge") { "Junk" } else { "Outage" };
            Err(HandlerError::fatal("downstream is down").with_kind(kind))
        } else {
            Ok(())
        }
    });
    publish(
        &ctx,
        vec![Message::new("a"), Message::new("b"), Message::new("c"), Message::new("purge-1"), Message::new("purge-2")],
    )
    .await?;
    let w = start(&ctx.broker, &ctx.topic, "g", handler, quick())?;
    let ok = wait_for(Duration::from_secs(20), || w.worker.stats().dead_lettered == 5).await;
    check!(ok, "dead-lettered {}", w.worker.stats().dead_lettered);
    let (ok, s) = stats_where(&ctx, "g", |s| s.dead_letters == 5).await?;
    check!(ok, "dead letter count {s:?}");

    // Purge with a filter removes only the matches.
    let filter = DeadLetterFilter { error_kind: Some("Junk".into()), ..Default::default() };
    let purged = dead_letter::purge(ctx.broker.as_ref(), &ctx.topic, "g", &filter).await.map_err(fail("purge"))?;
    check!(purged == 2, "purged {purged}, expected 2");

    broken.store(false, Ordering::SeqCst);
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
    let (ok, s) = stats_where(&ctx, "g", |s| s.dead_letters == 0 && s.ready == 0 && s.in_flight == 0).await?;
    check!(ok, "stats after redrive {s:?}");
    // Redrive went to `g` only: `other` still has exactly the 5 originals.
    let (ok, o) = stats_where(&ctx, "other", |o| o.ready == 5).await?;
    check!(ok, "the other group should hold just the 5 originals: {o:?}");

    // Purge without a filter removes everything.
    publish(&ctx, vec![Message::new("x")]).await?;
    let store_flag = Arc::new(AtomicU32::new(0));
    let f = Arc::clone(&store_flag);
    let w = start(
        &ctx.broker,
        &ctx.topic,
        "g",
        move |_j: Job| {
            let f = Arc::clone(&f);
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::fatal("no"))
            }
        },
        quick(),
    )?;
    wait_for(Duration::from_secs(20), || w.worker.stats().dead_lettered == 1).await;
    w.stop().await?;
    let all = dead_letter::purge(ctx.broker.as_ref(), &ctx.topic, "g", &DeadLetterFilter::default())
        .await
        .map_err(fail("purge"))?;
    check!(all == 1, "purged {all}");
    check!(stats_where(&ctx, "g", |s| s.dead_letters == 0).await?.0, "dead letters left after purge");
    Ok(Outcome::Passed)
}

/// Two messages with one idempotency key: the handler runs once.
async fn idempotency_same_key_published_twice(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("charge").with_idempotency_key("charge-42")]).await?;
    let r = Recorder::default();
    let w = start(&ctx.broker, &ctx.topic, "g", r.handler(|_| Ok(())), quick())?;
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
async fn idempotency_redelivery_after_done(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("once").with_idempotency_key("k-1")]).await?;
    let first = ctx.another_connection().await?;
    let got = first
        .receive(ReceiveRequest {
            topic: &ctx.topic,
            group: "g",
            consumer: "doomed",
            max: 1,
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
    let w = start(&ctx.broker, &ctx.topic, "g", r.handler(|_| Ok(())), quick().idempotency_store(store))?;
    let ok = wait_for(Duration::from_secs(20), || w.worker.stats().duplicates == 1).await;
    let st = w.stop().await?;
    check!(ok, "redelivered copy not recognised; stats {st:?}");
    check!(r.count() == 0, "handler ran {} times on a done key", r.count());
    check!(settled(&ctx, "g").await?, "not settled: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}

/// Two consumers race on one key: the handler's effect happens once.
async fn idempotency_race_runs_once(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let other = ctx.another_connection().await?;
    let store = ctx.shared_store();
    let effects = Arc::new(AtomicU32::new(0));
    let make = |e: Arc<AtomicU32>| {
        move |_job: Job| {
            let e = Arc::clone(&e);
            async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                e.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let opts = quick().idempotency_store(Arc::clone(&store));
    let wa = start(&ctx.broker, &ctx.topic, "g", make(Arc::clone(&effects)), opts.clone())?;
    let wb = start(&other, &ctx.topic, "g", make(Arc::clone(&effects)), opts)?;
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
    check!(effects.load(Ordering::SeqCst) == 1, "effect happened {} times", effects.load(Ordering::SeqCst));
    check!(settled(&ctx, "g").await?, "not settled: {:?}", stats(&ctx, "g").await?);
    Ok(Outcome::Passed)
}

/// A consumer that disappears mid-message: the message reaches another
/// consumer, as a new attempt.
async fn consumer_dropped_mid_message(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", vec![Message::new("survivor")]).await?;
    let doomed = ctx.another_connection().await?;
    let got = doomed
        .receive(ReceiveRequest {
            topic: &ctx.topic,
            group: "g",
            consumer: "doomed",
            max: 1,
            wait: Duration::from_secs(10),
            lease: Duration::from_millis(800),
        })
        .await
        .map_err(fail("receive"))?;
    check!(got.len() == 1, "received {}", got.len());
    let _ = doomed.close().await; // gone without settling
    let r = Recorder::default();
    let w = start(&ctx.broker, &ctx.topic, "g", r.handler(|_| Ok(())), quick())?;
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
async fn crash_loop_dead_lettered(ctx: Ctx) -> Result<Outcome, Failure> {
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
    let w = start(&ctx.broker, &ctx.topic, "g", r.handler(|_| Ok(())), opts)?;
    let ok = wait_for(Duration::from_secs(30), || w.worker.stats().dead_lettered == 1).await;
    let st = w.stop().await?;
    check!(ok, "not dead-lettered; stats {st:?}");
    check!(r.count() == 0, "handler ran {} times on a message over its budget", r.count());
    let dead = ctx.broker.list_dead_letters(&ctx.topic, "g", None, 10).await.map_err(fail("list"))?;
    check!(dead.len() == 1 && dead[0].reason.cause == cause::REDELIVERY_LIMIT, "dead letters {dead:?}");
    check!(dead[0].reason.attempts == 3, "attempts {}", dead[0].reason.attempts);
    Ok(Outcome::Passed)
}

/// A handler slower than the lease is not handed to a second consumer,
/// because the runtime keeps the lease fresh.
async fn slow_handler_lease_renewed(ctx: Ctx) -> Result<Outcome, Failure> {
    if !ctx.broker.capabilities().leases {
        return Ok(Outcome::Skipped("messages are held by the connection, not by leases".into()));
    }
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let other = ctx.another_connection().await?;
    let runs = Arc::new(AtomicU32::new(0));
    let make = |runs: Arc<AtomicU32>| {
        move |_job: Job| {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Ok::<(), HandlerError>(())
            }
        }
    };
    let opts = quick().lease(Duration::from_millis(600));
    let wa = start(&ctx.broker, &ctx.topic, "g", make(Arc::clone(&runs)), opts.clone())?;
    let wb = start(&other, &ctx.topic, "g", make(Arc::clone(&runs)), opts)?;
    publish(&ctx, vec![Message::new("slow")]).await?;
    let ok = wait_for(Duration::from_secs(20), || wa.worker.stats().succeeded + wb.worker.stats().succeeded == 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    wa.stop().await?;
    wb.stop().await?;
    let _ = other.close().await;
    check!(ok, "slow message never finished");
    check!(runs.load(Ordering::SeqCst) == 1, "slow handler ran {} times", runs.load(Ordering::SeqCst));
    Ok(Outcome::Passed)
}

/// A delayed message waits on the broker and is not delivered early.
async fn delayed_publish_not_early(ctx: Ctx) -> Result<Outcome, Failure> {
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
    let w = start(&ctx.broker, &ctx.topic, "g", r.handler(|_| Ok(())), quick())?;
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
async fn per_key_ordering(ctx: Ctx) -> Result<Outcome, Failure> {
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
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let o = Arc::clone(&order);
    let handler = move |job: Job| {
        let o = Arc::clone(&o);
        async move {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..15))).await;
            o.lock().unwrap().push(String::from_utf8_lossy(&job.message.payload).into_owned());
            Ok::<(), HandlerError>(())
        }
    };
    let w = start(&ctx.broker, &ctx.topic, "g", handler, quick().concurrency(4).prefetch(8))?;
    let ok = wait_for(Duration::from_secs(20), || order.lock().unwrap().len() == 30).await;
    w.stop().await?;
    check!(ok, "handled {}", order.lock().unwrap().len());
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for entry in order.lock().unwrap().iter() {
        let (k, i) = entry.split_once(':').unwrap();
        per_key.entry(k.to_string()).or_default().push(i.parse().unwrap());
    }
    for (k, seq) in &per_key {
        check!(seq.windows(2).all(|w| w[0] < w[1]), "key {k} handled out of order: {seq:?}");
    }
    Ok(Outcome::Passed)
}

/// The inspection figures are true at each step.
async fn inspection_figures(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let delayed = ctx.broker.capabilities().delayed_delivery;
    let mut batch = numbered(3);
    if delayed {
        batch.push(Message::new("later").with_delay(Duration::from_secs(600)));
    }
    publish(&ctx, batch).await?;
    let waiting0 = u64::from(delayed);
    let (ok, s) =
        stats_where(&ctx, "g", |s| s.ready == 3 && s.in_flight == 0 && s.waiting == waiting0 && s.dead_letters == 0)
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
        let received =
            if pushes { s.in_flight >= 2 && s.ready + s.in_flight == 3 } else { s.ready == 1 && s.in_flight == 2 };
        received && s.waiting == waiting0
    })
    .await?;
    check!(ok, "after receiving 2: {s:?}");
    ctx.broker.ack(&got[..1]).await.map_err(fail("ack"))?;
    let mut next = Message::clone(&got[1].message);
    next.attempt += 1;
    next.deliver_at = Some(SystemTime::now() + Duration::from_secs(600));
    ctx.broker.retry(&got[1], next).await.map_err(fail("retry"))?;
    // Where the broker pushes ahead, the third message may sit in this
    // consumer's prefetch (in flight) rather than in the queue (ready).
    let (ok, s) = stats_where(&ctx, "g", |s| {
        let (ready, in_flight) = if pushes { (s.ready + s.in_flight, 0) } else { (s.ready, s.in_flight) };
        ready == 1 && in_flight == 0 && s.waiting == waiting0 + 1
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
        s.ready == 0 && s.in_flight == 0 && s.waiting == waiting0 + 1 && s.dead_letters == 1
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

/// A message from a plain client, with none of our headers, is consumed.
async fn foreign_message_consumed(ctx: Ctx) -> Result<Outcome, Failure> {
    ctx.broker.ensure_group(&ctx.topic, "g").await.map_err(fail("ensure_group"))?;
    let before = SystemTime::now();
    ctx.broker
        .publish_raw(&ctx.topic, vec![("x-source".into(), "legacy".into())], Bytes::from_static(b"{\"plain\":true}"))
        .await
        .map_err(fail("publish_raw"))?;
    let r = Recorder::default();
    let w = start(&ctx.broker, &ctx.topic, "g", r.handler(|_| Ok(())), quick())?;
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
async fn malformed_metadata_dead_lettered(ctx: Ctx) -> Result<Outcome, Failure> {
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
    let w = start(&ctx.broker, &ctx.topic, "g", r.handler(|_| Ok(())), quick())?;
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
async fn oversized_message_rejected(ctx: Ctx) -> Result<Outcome, Failure> {
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

/// Shutdown stops receiving, finishes or hands back what is in flight, and
/// loses nothing: a second worker handles the rest, each message once.
async fn graceful_shutdown_loses_nothing(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", numbered(20)).await?;
    let r = Recorder::default();
    let slow = |_: &Job| {
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    };
    let w = start(&ctx.broker, &ctx.topic, "g", r.handler(slow), quick().concurrency(2).prefetch(4))?;
    wait_for(Duration::from_secs(20), || r.count() >= 4).await;
    let first = w.stop().await?;
    let done_first = r.count();
    check!(done_first < 20, "all messages done before shutdown; the test proves nothing");
    let (ok, s) = stats_where(&ctx, "g", |s| s.in_flight == 0 && s.ready as usize == 20 - done_first).await?;
    check!(ok, "after shutdown with {done_first} done: {s:?} {first:?}");
    let w2 = start(&ctx.broker, &ctx.topic, "g", r.handler(|_| Ok(())), quick())?;
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
async fn worker_stopping_leaves_its_neighbour_alone(ctx: Ctx) -> Result<Outcome, Failure> {
    publish_to_group(&ctx, "g", numbered(30)).await?;
    let r = Recorder::default();
    let slow = |_: &Job| {
        std::thread::sleep(Duration::from_millis(30));
        Ok(())
    };
    let a = start(&ctx.broker, &ctx.topic, "g", r.handler(slow), quick().concurrency(2).prefetch(2))?;
    let b = start(&ctx.broker, &ctx.topic, "g", r.handler(slow), quick().concurrency(2).prefetch(2))?;
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
