//! RabbitMQ restarts in the middle of a run: no confirmed publish is lost
//! and every message is handled. Stops and starts the test node with the
//! project's scripts (tests/brokers/), so it needs that node
//! (`PILLARBOX_AMQP_URL` is not used here: the test restarts what it knows).
#![cfg(feature = "amqp")]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pillarbox::{connect, Worker, WorkerOptions};

const URL: &str = "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000";

/// The node's OS process id, from the pid file the start script asks for.
fn node_pid() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.pillarbox-test/rabbitmq/rabbitmq.pid");
    std::fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

fn script(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/brokers").join(name);
    let ok = Command::new("bash").arg(&path).status().unwrap().success();
    assert!(ok, "{} failed", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_run_loses_no_confirmed_publish() {
    let topic = format!("restart{}", std::process::id());
    let broker = connect(URL).await.unwrap();
    broker.ensure_group(&topic, "workers").await.unwrap();

    let handled: support::Seen = Default::default();
    let handler = support::recording_handler(&handled);
    let options = WorkerOptions::default().concurrency(2).prefetch(8).poll_wait(Duration::from_millis(200));
    let worker = Worker::new(Arc::clone(&broker), &topic, "workers", handler, options).unwrap();
    let mut running = None;

    const N: usize = 300;
    let mut confirmed = Vec::new();
    let mut failed_calls = 0;
    let mut backlog_at_stop = 0;
    let pid_before = node_pid();
    for i in 0..N {
        if i == N / 3 {
            // The worker starts now, so a backlog is certainly waiting when the broker stops.
            let runner = worker.clone();
            running = Some(tokio::spawn(async move { runner.run().await }));
            // (The in-flight figure comes from the management API, which a
            // loaded machine can make slow: try again rather than fail.)
            for _ in 0..3 {
                match broker.inspect(&topic, "workers").await {
                    Ok(s) => {
                        backlog_at_stop = s.ready;
                        break;
                    }
                    Err(e) => eprintln!("inspect failed, trying again: {e}"),
                }
            }
            tokio::task::spawn_blocking(|| {
                script("stop-rabbitmq.sh");
                script("start-rabbitmq.sh");
            })
            .await
            .unwrap();
        }
        let body = format!("job-{i}");
        failed_calls += support::publish_until_taken(broker.as_ref(), &topic, &body, Duration::from_secs(60)).await;
        confirmed.push(body);
    }
    support::wait_all_seen(&handled, &confirmed, Duration::from_secs(90)).await;
    support::report(&format!(
        "RabbitMQ orderly restart: {} publishes confirmed ({failed_calls} publish calls failed during the restart \
         and were repeated); {backlog_at_stop} waiting when the broker stopped; lost 0",
        confirmed.len()
    ));
    assert!(backlog_at_stop > 0, "nothing was waiting when the broker stopped: the test proves nothing");
    assert_ne!(node_pid(), pid_before, "the broker was not restarted: the test proves nothing");
    worker.shutdown();
    running.expect("started").await.unwrap().unwrap();
}
