//! The task layer over the memory backend: calls published, run with their
//! arguments, and what cannot run dead-lettered with its kind.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::*;
use crate::{Broker, HandlerError, RetryPolicy, Worker, WorkerOptions, WorkerStats};

async fn broker() -> Arc<dyn Broker> {
    crate::connect("memory://").await.unwrap()
}

/// Runs `worker` until its stats satisfy `done` (or 20 s pass), then stops it.
async fn run_until(worker: &Worker, done: impl Fn(&WorkerStats) -> bool) -> WorkerStats {
    let runner = worker.clone();
    let task = tokio::spawn(async move { runner.run().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&worker.stats()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown();
    task.await.unwrap().unwrap();
    worker.stats()
}

fn quick() -> WorkerOptions {
    WorkerOptions::default().poll_wait(Duration::from_millis(50))
}

#[tokio::test]
async fn a_call_runs_with_its_args_and_kwargs_and_travels_as_the_shared_envelope() {
    let broker = broker().await;
    let mut app = App::new(Arc::clone(&broker));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let send = app
        .task("emails.send_welcome", move |call, job| {
            let record = Arc::clone(&record);
            async move {
                let to: String = call.arg(0)?;
                let lang: Option<String> = call.kwarg("lang")?;
                record.lock().unwrap().push((to, lang, job.message.headers.get(TASK_HEADER).cloned()));
                Ok::<(), HandlerError>(())
            }
        })
        .unwrap();
    assert_eq!((send.name(), send.topic()), ("emails.send_welcome", DEFAULT_TOPIC));
    send.delay(to_args(("ada@example.com",)).unwrap()).await.unwrap();
    send.apply_async(Apply::args(vec![json!("bob@example.com")]).kwarg("lang", json!("fr"))).await.unwrap();

    let workers = app.workers(quick()).await.unwrap();
    assert_eq!(workers.len(), 1);
    let stats = run_until(&workers[0], |s| s.succeeded >= 2).await;
    assert_eq!(stats.succeeded, 2);
    let task = Some("emails.send_welcome".to_string());
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("ada@example.com".into(), None, task.clone()), ("bob@example.com".into(), Some("fr".into()), task)]
    );
}

#[tokio::test]
async fn a_call_carries_its_options_as_message_metadata() {
    let broker = broker().await;
    broker.ensure_group("jobs", "audit").await.unwrap();
    let app = App::new(Arc::clone(&broker));
    let eta = SystemTime::now() + Duration::from_secs(3600);
    let remote = app.signature("reports.build").on_topic("jobs").unwrap();
    remote
        .apply_async(
            Apply::args(vec![json!(1)]).eta(eta).key("customer-7").idempotency_key("report-7").header("origin", "rust"),
        )
        .await
        .unwrap();
    // The app's group was made before the call went out.
    assert!(broker.groups("jobs").await.unwrap().contains(&DEFAULT_GROUP.to_string()));
    let stats = broker.inspect("jobs", "audit").await.unwrap();
    assert_eq!(stats.waiting, 1, "an eta an hour away waits");
    let countdown = app.signature("reports.build").on_topic("jobs").unwrap();
    countdown.apply_async(Apply::default().countdown(Duration::from_secs(3600))).await.unwrap();
    assert_eq!(broker.inspect("jobs", "audit").await.unwrap().waiting, 2);
}

#[tokio::test]
async fn what_cannot_run_is_dead_lettered_at_once_with_its_kind() {
    let broker = broker().await;
    let mut app = App::new(Arc::clone(&broker));
    app.task("known", |call, _job| async move {
        let _n: u32 = call.arg(0)?;
        Ok::<(), HandlerError>(())
    })
    .unwrap();
    let workers = app.workers(quick().retry(RetryPolicy::retries(5))).await.unwrap();
    app.signature("not.here").delay(vec![]).await.unwrap();
    app.signature("known").delay(vec![json!("not a number")]).await.unwrap();
    broker.publish(DEFAULT_TOPIC, vec![crate::Message::new("not json")]).await.unwrap();
    let stats = run_until(&workers[0], |s| s.dead_lettered >= 3).await;
    assert_eq!((stats.dead_lettered, stats.retried), (3, 0));
    let mut kinds: Vec<(String, u32)> = broker
        .list_dead_letters(DEFAULT_TOPIC, DEFAULT_GROUP, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.reason.error_kind, d.reason.attempts))
        .collect();
    kinds.sort();
    let expected: Vec<(String, u32)> =
        [INVALID_ARGUMENTS, INVALID_ENVELOPE, UNKNOWN_TASK].iter().map(|k| (k.to_string(), 1)).collect();
    assert_eq!(kinds, expected);
}

#[tokio::test]
async fn the_idempotency_rule_gives_each_call_its_key_unless_the_call_names_one() {
    let broker = broker().await;
    let mut app = App::new(Arc::clone(&broker));
    let runs = Arc::new(Mutex::new(Vec::<Value>::new()));
    let record = Arc::clone(&runs);
    let options = TaskOptions::default()
        .topic("welcomes")
        .idempotency_key(|call| call.args.first().and_then(Value::as_str).map(|to| format!("welcome-{to}")));
    let send = app
        .task_with("send", options, move |call, _job| {
            let record = Arc::clone(&record);
            async move {
                record.lock().unwrap().push(call.args[0].clone());
                Ok::<(), HandlerError>(())
            }
        })
        .unwrap();
    assert_eq!(app.topics(), vec!["welcomes".to_string()]);
    send.delay(vec![json!("ada")]).await.unwrap();
    send.delay(vec![json!("ada")]).await.unwrap();
    send.apply_async(Apply::args(vec![json!("ada")]).idempotency_key("again")).await.unwrap();
    let workers = app.workers(quick()).await.unwrap();
    let stats = run_until(&workers[0], |s| s.succeeded + s.duplicates >= 3).await;
    assert_eq!((stats.succeeded, stats.duplicates), (2, 1));
    assert_eq!(runs.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn registration_refuses_what_would_be_ambiguous() {
    let mut app = App::new(broker().await);
    let ok = |_call, _job| async { Ok::<(), HandlerError>(()) };
    app.task_with("a", TaskOptions::default().retry(RetryPolicy::retries(1)), ok).unwrap();
    let twice = app.task("a", ok).unwrap_err();
    assert_eq!(twice.code(), "INVALID_OPTION");
    let other_policy = app.task_with("b", TaskOptions::default().retry(RetryPolicy::retries(2)), ok).unwrap_err();
    assert!(other_policy.to_string().contains("share one"), "{other_policy}");
    app.task_with("c", TaskOptions::default().retry(RetryPolicy::retries(1)), ok).unwrap();
    assert_eq!(
        app.task_with("d", TaskOptions::default().topic("bad topic"), ok).unwrap_err().code(),
        "INVALID_MESSAGE"
    );
    assert!(App::new(broker().await).workers(quick()).await.is_err(), "no tasks, nothing to run");
}

/// Counts `ensure_group` calls, passing everything to the broker it wraps.
#[derive(Debug)]
struct CountingGroups {
    inner: Arc<dyn Broker>,
    made: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Broker for CountingGroups {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> crate::Capabilities {
        self.inner.capabilities()
    }
    async fn ensure_group(&self, topic: &str, group: &str) -> crate::Result<()> {
        self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.ensure_group(topic, group).await
    }
    async fn publish(&self, topic: &str, messages: Vec<crate::Message>) -> crate::Result<()> {
        self.inner.publish(topic, messages).await
    }
    async fn publish_raw(
        &self,
        topic: &str,
        headers: Vec<(String, String)>,
        payload: bytes::Bytes,
    ) -> crate::Result<()> {
        self.inner.publish_raw(topic, headers, payload).await
    }
    async fn receive(&self, request: crate::ReceiveRequest<'_>) -> crate::Result<Vec<crate::Delivery>> {
        self.inner.receive(request).await
    }
    async fn ack(&self, deliveries: &[crate::Delivery]) -> crate::Result<()> {
        self.inner.ack(deliveries).await
    }
    async fn extend_leases(&self, deliveries: &[crate::Delivery], lease: Duration) -> crate::Result<()> {
        self.inner.extend_leases(deliveries, lease).await
    }
    async fn retry(&self, delivery: &crate::Delivery, next: crate::Message) -> crate::Result<()> {
        self.inner.retry(delivery, next).await
    }
    async fn dead_letter(&self, delivery: &crate::Delivery, reason: &crate::DeadLetterReason) -> crate::Result<()> {
        self.inner.dead_letter(delivery, reason).await
    }
    async fn inspect(&self, topic: &str, group: &str) -> crate::Result<crate::GroupStats> {
        self.inner.inspect(topic, group).await
    }
    async fn groups(&self, topic: &str) -> crate::Result<Vec<String>> {
        self.inner.groups(topic).await
    }
    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> crate::Result<Vec<crate::DeadLetter>> {
        self.inner.list_dead_letters(topic, group, after, limit).await
    }
    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> crate::Result<usize> {
        self.inner.redrive_dead_letters(topic, group, ids).await
    }
    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> crate::Result<usize> {
        self.inner.purge_dead_letters(topic, group, ids).await
    }
}

#[tokio::test]
async fn a_topics_group_is_made_once_per_app_not_once_per_call() {
    let counting = Arc::new(CountingGroups { inner: broker().await, made: Default::default() });
    let app = App::new(Arc::clone(&counting) as Arc<dyn Broker>);
    for n in 0..5 {
        // A fresh signature each time, as a service calling by name does.
        app.signature("reports.build").delay(vec![json!(n)]).await.unwrap();
    }
    app.signature("reports.build").on_topic("other").unwrap().delay(vec![]).await.unwrap();
    assert_eq!(counting.made.load(std::sync::atomic::Ordering::SeqCst), 2, "one per topic");
    assert_eq!(counting.inspect(DEFAULT_TOPIC, DEFAULT_GROUP).await.unwrap().ready, 5);
}

#[tokio::test]
async fn a_scheduled_task_runs_with_its_args_at_each_tick() {
    use crate::schedule::{Misfire, Scheduler, Upserted, When};

    let broker = broker().await;
    let mut app = App::new(Arc::clone(&broker));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let build = app
        .task_with("reports.build", TaskOptions::default().topic("reports"), move |call, job| {
            let record = Arc::clone(&record);
            async move {
                let kind: String = call.arg(0)?;
                record.lock().unwrap().push((kind, job.message.schedule.clone()));
                Ok::<(), HandlerError>(())
            }
        })
        .unwrap();
    let when = When::Every { every_ms: 1000, anchor_ms: None };
    let mut schedule = build.schedule("reports-every-second", when, Apply::args(vec![json!("daily")])).unwrap();
    schedule.misfire = Misfire::All { cap: 10 };
    assert_eq!(app.schedule(&schedule).await.unwrap(), Upserted::Created);
    assert_eq!(app.schedule(&schedule).await.unwrap(), Upserted::Unchanged);
    assert_eq!(schedule.topic, "reports", "the task's topic");

    let scheduler = Scheduler::for_broker(Arc::clone(&broker)).unwrap();
    // Two ticks: the first whole second after it was made, and the next.
    let since = scheduler.store().list().await.unwrap()[0].since;
    let first = since + Duration::from_millis(1000 - (crate::message::to_millis(since) % 1000));
    let published = scheduler.run_once(first + Duration::from_millis(1500)).await.unwrap().published;
    assert_eq!(published.len(), 2, "{published:?}");
    let workers = app.workers(quick()).await.unwrap();
    run_until(&workers[0], |s| s.succeeded >= 2).await;
    let name = Some("reports-every-second".to_string());
    assert_eq!(*seen.lock().unwrap(), vec![("daily".to_string(), name.clone()), ("daily".to_string(), name)]);
}
