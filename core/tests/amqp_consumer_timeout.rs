//! A handler that outlives RabbitMQ's consumer timeout: RabbitMQ closes
//! the channel and delivers the message again. The worker must count that
//! message lost, never a success, and a message with an idempotency key
//! must not run a second time.
//!
//! The test node's timeout is lowered for the test's duration (and put
//! back) with the project's `tests/brokers/rabbitmqctl.sh`; the URL asks
//! for the same timeout per consumer, which nodes from 3.11.15 apply (older
//! ones ignore it and apply their own), so the test means the same on both.
#![cfg(feature = "amqp")]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pillarbox::{connect, HandlerError, Job, Message, Worker, WorkerOptions};

const URL: &str =
    "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000&consumer_timeout_ms=1000";

/// Evaluates an Erlang expression on the test node.
fn eval(expression: &str) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/brokers/rabbitmqctl.sh");
    let out = Command::new("bash").arg(&script).arg("eval").arg(expression).output().unwrap();
    assert!(out.status.success(), "rabbitmqctl eval {expression}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A setting of the node's `rabbit` application, changed until dropped.
struct NodeSetting {
    key: &'static str,
    was: String,
}

impl NodeSetting {
    fn set(key: &'static str, value: u64) -> Self {
        let was = eval(&format!("application:get_env(rabbit, {key})."));
        eval(&format!("application:set_env(rabbit, {key}, {value})."));
        NodeSetting { key, was }
    }
}

impl Drop for NodeSetting {
    fn drop(&mut self) {
        // `{ok,1800000}` back as it was; `undefined` unset again.
        match self.was.strip_prefix("{ok,").and_then(|v| v.strip_suffix('}')) {
            Some(value) => eval(&format!("application:set_env(rabbit, {}, {value}).", self.key)),
            None => eval(&format!("application:unset_env(rabbit, {}).", self.key)),
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_outliving_the_consumer_timeout_is_lost_not_a_success_and_runs_once() {
    // Channels read both when they open: set before the worker's opens.
    // The node looks for late acks every tick (a minute by default).
    let _timeout = NodeSetting::set("consumer_timeout", 1000);
    let _tick = NodeSetting::set("channel_tick_interval", 200);

    let topic = format!("ctimeout{}", std::process::id());
    let broker = connect(URL).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, vec![Message::new("long job").with_idempotency_key("once")]).await.unwrap();

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let handler = move |_job: Job| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            // Well past the timeout and the tick that notices it.
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<(), HandlerError>(())
        }
    };
    let options = WorkerOptions::default().poll_wait(Duration::from_millis(200));
    let worker = Worker::new(Arc::clone(&broker), &topic, "g", handler, options).unwrap();
    let runner = worker.clone();
    let task = tokio::spawn(async move { runner.run().await });

    // The first delivery is lost; the second is a duplicate of a done key.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (worker.stats().lost < 1 || worker.stats().duplicates < 1) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown();
    task.await.unwrap().unwrap();
    let stats = worker.stats();
    assert_eq!(stats.lost, 1, "{stats:?}");
    assert_eq!(stats.succeeded, 0, "a delivery RabbitMQ took back counted as a success: {stats:?}");
    assert_eq!(stats.duplicates, 1, "the delivery that came back was not skipped: {stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran again: {stats:?}");
    broker.close().await.unwrap();
}
