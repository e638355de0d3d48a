//! The conformance suite: backend-agnostic scenarios that take a broker URL.
//!
//! Every backend must pass all of them, and every language: a scenario
//! describes its handlers as data ([`Script`]), and the caller's
//! [`Handlers`] acts them out, in Rust ([`RustHandlers`], what
//! [`run_scenario`] uses) or in Python and JavaScript (the packages'
//! implementations, through [`run_scenario_with`]). Run them against any URL:
//!
//! ```sh
//! pillarbox check sqlite:///tmp/check.db      # the command in cli/
//! ```
//!
//! Each scenario works on topics of its own (`conf.<scenario>.<random>`), so
//! a run never touches existing data. Scenarios that need a capability the
//! backend does not claim are skipped, and say so.

mod scenarios;
mod script;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::idempotency::{IdempotencyStore, MemoryStore};
use crate::message::Message;
use crate::worker::{RetryPolicy, Worker, WorkerOptions, WorkerStats};
pub(crate) use script::Recorder;
pub use script::{Behaviour, Failing, Handlers, RustHandlers, Script};

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

type ScenarioFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Outcome, Failure>> + Send>>;

/// A named scenario.
pub struct Scenario {
    /// Its name.
    pub name: &'static str,
    run: fn(Ctx) -> ScenarioFuture,
}

macro_rules! scenarios {
    ($($theme:ident :: $name:ident),* $(,)?) => {
        /// Every scenario, in a sensible order.
        pub fn scenarios() -> Vec<Scenario> {
            vec![$(Scenario { name: stringify!($name), run: |ctx| Box::pin(scenarios::$theme::$name(ctx)) }),*]
        }
    };
}

scenarios!(
    delivery::round_trip_with_all_metadata,
    delivery::fan_out_to_two_groups,
    delivery::competing_consumers_handle_each_once,
    failures::retry_then_success,
    failures::retries_exhausted_dead_letter,
    failures::not_retryable_dead_letters_at_once,
    failures::panic_and_timeout_are_failures,
    failures::redrive_and_purge,
    idempotency::idempotency_same_key_published_twice,
    idempotency::idempotency_redelivery_after_done,
    idempotency::idempotency_race_runs_once,
    crashes::consumer_dropped_mid_message,
    crashes::crash_loop_dead_lettered,
    crashes::slow_handler_lease_renewed,
    delivery::delayed_publish_not_early,
    delivery::per_key_ordering,
    inspection::inspection_figures,
    bad_input::foreign_message_consumed,
    bad_input::malformed_metadata_dead_lettered,
    bad_input::oversized_message_rejected,
    bad_input::bad_names_refused,
    shutdown::graceful_shutdown_loses_nothing,
    shutdown::worker_stopping_leaves_its_neighbour_alone,
    schedules::schedule_claims_exclusive_and_current,
    schedules::schedule_ticks_published_once,
);

/// Runs one scenario by name against `url`, with handlers written in Rust.
pub async fn run_scenario(url: &str, name: &str) -> Result<Outcome, Failure> {
    run_scenario_with(url, name, Arc::new(RustHandlers)).await
}

/// Runs one scenario by name against `url`, with handlers made by `handlers`
/// (a binding's, in its own language).
pub async fn run_scenario_with(url: &str, name: &str, handlers: Arc<dyn Handlers>) -> Result<Outcome, Failure> {
    let scenario =
        scenarios().into_iter().find(|s| s.name == name).ok_or_else(|| format!("no scenario named `{name}`"))?;
    let ctx = Ctx::new(url, name, handlers).await?;
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
    handlers: Arc<dyn Handlers>,
}

impl Ctx {
    async fn new(url: &str, scenario: &str, handlers: Arc<dyn Handlers>) -> Result<Ctx, Failure> {
        let broker = crate::connect(url).await.map_err(|e| format!("connect: {e}"))?;
        let suffix = &uuid::Uuid::now_v7().simple().to_string()[20..];
        let short: String = scenario.chars().take(40).collect();
        Ok(Ctx { url: url.to_string(), broker, topic: format!("conf.{short}.{suffix}"), handlers })
    }

    /// A second, independent connection to the same broker.
    async fn another_connection(&self) -> Result<Arc<dyn Broker>, Failure> {
        crate::connect(&self.url).await.map_err(|e| format!("second connection: {e}"))
    }

    /// The idempotency store workers of this broker share across connections.
    fn shared_store(&self) -> Arc<dyn IdempotencyStore> {
        self.broker.idempotency_store().unwrap_or_else(|| Arc::new(MemoryStore::new()))
    }

    /// Starts a worker for `group` of the scenario's topic on `broker`,
    /// whose handler acts out `script` and reports to `recorder`.
    fn start(
        &self,
        broker: &Arc<dyn Broker>,
        group: &str,
        recorder: &Recorder,
        script: Script,
        options: WorkerOptions,
    ) -> Result<Running, Failure> {
        let handler = recorder.wrap(self.handlers.handler(&script));
        let worker =
            Worker::new(Arc::clone(broker), &self.topic, group, handler, options).map_err(fail("worker options"))?;
        let runner = worker.clone();
        let task = tokio::spawn(async move { runner.run().await });
        Ok(Running { worker, task })
    }
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{} (at {}:{})", format!($($fmt)+), file!(), line!()));
        }
    };
}
use check;

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

fn numbered(n: usize) -> Vec<Message> {
    (0..n).map(|i| Message::new(format!("m{i}"))).collect()
}

async fn publish(ctx: &Ctx, messages: Vec<Message>) -> Result<(), Failure> {
    ctx.broker.publish(&ctx.topic, messages).await.map_err(fail("publish"))
}

async fn publish_to_group(ctx: &Ctx, group: &str, messages: Vec<Message>) -> Result<(), Failure> {
    ctx.broker.ensure_group(&ctx.topic, group).await.map_err(fail("ensure_group"))?;
    publish(ctx, messages).await
}

async fn stats(ctx: &Ctx, group: &str) -> Result<crate::GroupStats, Failure> {
    ctx.broker.inspect(&ctx.topic, group).await.map_err(fail("inspect"))
}

/// Inspection figures that satisfy `expect`, waiting for them to get there
/// up to twice the backend's stated staleness (`Capabilities::stats_delay`)
/// and a second more: a refresh due every `stats_delay` comes later on two
/// busy cores (RabbitMQ's management figures once came after 5.2 s of a
/// 5 s interval). The last figures seen when they never do.
async fn stats_where(
    ctx: &Ctx,
    group: &str,
    expect: impl Fn(&crate::GroupStats) -> bool,
) -> Result<(bool, crate::GroupStats), Failure> {
    let deadline = Instant::now() + ctx.broker.capabilities().stats_delay * 2 + Duration::from_secs(1);
    loop {
        let s = stats(ctx, group).await?;
        if expect(&s) || Instant::now() >= deadline {
            return Ok((expect(&s), s));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn settled(ctx: &Ctx, group: &str) -> Result<bool, Failure> {
    Ok(stats_where(ctx, group, |s| s.ready == 0 && s.in_flight == Some(0) && s.waiting == 0).await?.0)
}
