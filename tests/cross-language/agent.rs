//! The Rust side of the cross-language matrix (see matrix.py): reads JSON
//! requests on stdin, one a line, runs each as a task of its own with the
//! core's public API, and answers on stdout with the same id. The Python
//! (agent.py) and Node (agent.js) agents answer the same requests.
//!
//! Built as an example of the core (`cargo build -p pillarbox --example
//! matrix-agent --all-features`), so the test command's build is reused.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pillarbox::message::to_millis;
use pillarbox::tasks::{App, Apply};
use pillarbox::{Broker, HandlerError, Job, Message, RetryPolicy, Worker, WorkerOptions, WorkerStats};
use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;

type Seen = Arc<Mutex<Vec<Value>>>;
type Outcome = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send>>;

#[derive(Default)]
struct Agent {
    brokers: AsyncMutex<HashMap<String, Arc<dyn Broker>>>,
    workers: Mutex<HashMap<String, Running>>,
}

struct Running {
    worker: Worker,
    seen: Seen,
    run: tokio::task::JoinHandle<pillarbox::Result<()>>,
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let agent = Arc::new(Agent::default());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = serde_json::from_str(&line).expect("a JSON request");
        let (agent, out) = (Arc::clone(&agent), Arc::clone(&out));
        runtime.spawn(async move {
            let answer = match agent.serve(&request).await {
                Ok(value) => json!({"id": request["id"], "ok": value}),
                Err(error) => json!({"id": request["id"], "error": error}),
            };
            let mut out = out.lock().unwrap();
            writeln!(out, "{answer}").and_then(|()| out.flush()).expect("stdout");
        });
    }
    runtime.block_on(async {
        let names: Vec<String> = agent.workers.lock().unwrap().keys().cloned().collect();
        for name in names {
            let _ = agent.stop(&name).await;
        }
    });
}

fn text(r: &Value, field: &str) -> Result<String, String> {
    r[field].as_str().map(str::to_string).ok_or_else(|| format!("the request has no {field}"))
}

fn optional(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn error(e: pillarbox::Error) -> String {
    format!("{}: {e}", e.code())
}

impl Agent {
    async fn serve(&self, r: &Value) -> Result<Value, String> {
        let url = text(r, "url").unwrap_or_default();
        match r["op"].as_str().unwrap_or_default() {
            "ensure_group" => {
                self.broker(&url).await?.ensure_group(&text(r, "topic")?, &text(r, "group")?).await.map_err(error)?;
                Ok(Value::Null)
            }
            "publish" => self.publish(&url, r).await,
            "task_delay" => {
                let app = App::new(self.broker(&url).await?);
                let task = app.signature(&text(r, "task")?).on_topic(&text(r, "topic")?).map_err(error)?;
                let args = r["args"].as_array().cloned().unwrap_or_default();
                let kwargs = r["kwargs"].as_object().cloned().unwrap_or_default();
                Ok(json!(task.apply_async(Apply::args(args).kwargs(kwargs)).await.map_err(error)?))
            }
            "start" => self.start(&url, r).await,
            "stats" => {
                let workers = self.workers.lock().unwrap();
                let running = workers.get(&text(r, "name")?).ok_or("no such worker")?;
                Ok(stats(&running.worker.stats()))
            }
            "stop" => self.stop(&text(r, "name")?).await,
            "dead_letters" => {
                let broker = self.broker(&url).await?;
                let found =
                    broker.list_dead_letters(&text(r, "topic")?, &text(r, "group")?, None, 100).await.map_err(error)?;
                Ok(found
                    .into_iter()
                    .map(|d| {
                        json!({
                            "message_id": d.message.id, "payload": hex(&d.message.payload),
                            "attempt": d.message.attempt, "topic": d.reason.topic, "group": d.reason.group,
                            "attempts": d.reason.attempts, "cause": d.reason.cause,
                            "error_kind": d.reason.error_kind, "error_message": d.reason.error_message,
                        })
                    })
                    .collect())
            }
            "redrive" => {
                let broker = self.broker(&url).await?;
                let options = pillarbox::RedriveOptions::default();
                let moved = pillarbox::dead_letter::redrive(&*broker, &text(r, "topic")?, &text(r, "group")?, &options)
                    .await
                    .map_err(error)?;
                Ok(json!(moved))
            }
            other => Err(format!("unknown op {other}")),
        }
    }

    async fn broker(&self, url: &str) -> Result<Arc<dyn Broker>, String> {
        let mut brokers = self.brokers.lock().await;
        if let Some(broker) = brokers.get(url) {
            return Ok(Arc::clone(broker));
        }
        let broker = pillarbox::connect(url).await.map_err(error)?;
        brokers.insert(url.to_string(), Arc::clone(&broker));
        Ok(broker)
    }

    async fn publish(&self, url: &str, r: &Value) -> Result<Value, String> {
        let m = &r["message"];
        let mut message = Message::new(unhex(m["payload"].as_str().unwrap_or_default())?);
        if let Some(key) = optional(&m["key"]) {
            message = message.with_key(key);
        }
        if let Some(key) = optional(&m["idempotency_key"]) {
            message = message.with_idempotency_key(key);
        }
        if let Some(headers) = m["headers"].as_object() {
            for (name, value) in headers {
                message = message.with_header(name, value.as_str().ok_or("header values are strings")?);
            }
        }
        if let Some(content_type) = optional(&m["content_type"]) {
            message = message.with_content_type(content_type);
        }
        if let Some(ms) = m["delay_ms"].as_u64() {
            message = message.with_delay(Duration::from_millis(ms));
        }
        if let Some(traceparent) = optional(&m["traceparent"]) {
            message = message.with_traceparent(traceparent);
        }
        if let Some(tracestate) = optional(&m["tracestate"]) {
            message = message.with_tracestate(tracestate);
        }
        let at = to_millis(std::time::SystemTime::now());
        let id = message.id.clone();
        self.broker(url).await?.publish(&text(r, "topic")?, vec![message]).await.map_err(error)?;
        Ok(json!({"id": id, "at": at}))
    }

    async fn start(&self, url: &str, r: &Value) -> Result<Value, String> {
        let broker = self.broker(url).await?;
        let seen: Seen = Arc::default();
        let retry = RetryPolicy::retries(3)
            .with_backoff(Duration::from_millis(200), 2.0, Duration::from_secs(300))
            .with_jitter(0.0);
        let mut options = WorkerOptions::default()
            .concurrency(r["concurrency"].as_u64().unwrap_or(1) as usize)
            .prefetch(0)
            .poll_wait(Duration::from_millis(200))
            .retry(retry);
        if let Some(url) = optional(&r["store"]) {
            options = options.idempotency_store(pillarbox::idempotency::open(&url).await.map_err(error)?);
        }
        if let Some(ms) = r["busy_key_delay_ms"].as_u64() {
            options = options.busy_key_delay(Duration::from_millis(ms));
        }
        let topic = text(r, "topic")?;
        let worker = if r["behaviour"] == "tasks" {
            let mut app = App::new(broker).with_default_topic(&topic).map_err(error)?;
            let record = Arc::clone(&seen);
            app.task("matrix.record", move |call, _job| {
                record.lock().unwrap().push(json!({"args": call.args, "kwargs": call.kwargs}));
                async { Ok::<(), HandlerError>(()) }
            })
            .map_err(error)?;
            app.workers(options).await.map_err(error)?.remove(0)
        } else {
            let handler = handler(r, Arc::clone(&seen));
            Worker::new(broker, &topic, &text(r, "group")?, handler, options).map_err(error)?
        };
        let runner = worker.clone();
        let run = tokio::spawn(async move { runner.run().await });
        self.workers.lock().unwrap().insert(text(r, "name")?, Running { worker, seen, run });
        Ok(Value::Null)
    }

    async fn stop(&self, name: &str) -> Result<Value, String> {
        let running = self.workers.lock().unwrap().remove(name).ok_or("no such worker")?;
        running.worker.shutdown();
        running.run.await.map_err(|e| e.to_string())?.map_err(error)?;
        let seen = running.seen.lock().unwrap().clone();
        Ok(json!({"seen": seen, "stats": stats(&running.worker.stats())}))
    }
}

fn stats(s: &WorkerStats) -> Value {
    json!({"succeeded": s.succeeded, "retried": s.retried, "dead_lettered": s.dead_lettered, "duplicates": s.duplicates})
}

fn handler(r: &Value, seen: Seen) -> impl Fn(Job) -> Outcome + Send + Sync + 'static {
    let behaviour = r["behaviour"].as_str().unwrap_or("ok").to_string();
    let effects = optional(&r["effects"]);
    let sleep = Duration::from_millis(r["sleep_ms"].as_u64().unwrap_or(0));
    move |job: Job| {
        seen.lock().unwrap().push(observe(&job));
        let (behaviour, effects) = (behaviour.clone(), effects.clone());
        let outcome: Outcome = Box::pin(async move {
            match behaviour.as_str() {
                "fail_once" if job.attempt() == 1 => {
                    Err(HandlerError::retryable("first attempt fails").with_kind("Flaky"))
                }
                "fatal" => Err(HandlerError::fatal("no retry can fix this").with_kind("Rejected")),
                "effect" => {
                    tokio::time::sleep(sleep).await;
                    let line = format!("{} rust\n", job.message.idempotency_key.as_deref().unwrap_or_default());
                    let path = effects.expect("an effects file");
                    let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path).expect("effects");
                    file.write_all(line.as_bytes()).expect("effects");
                    Ok(())
                }
                _ => Ok(()),
            }
        });
        outcome
    }
}

fn observe(job: &Job) -> Value {
    let m = &job.message;
    let headers: BTreeMap<&String, &String> = m.headers.iter().collect();
    json!({
        "id": m.id,
        "payload": hex(&m.payload),
        "key": m.key,
        "idempotency_key": m.idempotency_key,
        "headers": headers,
        "content_type": m.content_type,
        "traceparent": m.traceparent,
        "tracestate": m.tracestate,
        "attempt": job.attempt(),
        "published_at": to_millis(m.published_at),
        "deliver_at": m.deliver_at.map(to_millis),
        "failures": m.failures.as_ref().map(|f| json!({"kind": f.last_error_kind, "message": f.last_error})),
        "received_at": to_millis(std::time::SystemTime::now()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err("odd hex".into());
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string())).collect()
}
