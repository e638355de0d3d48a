//! RabbitMQ restarts in the middle of a run: no confirmed publish is lost
//! and every message is handled. Stops and starts the test node with the
//! project's scripts (tests/brokers/), so it needs that node
//! (`PILLARBOX_AMQP_URL` is not used here: the test restarts what it knows).
#![cfg(feature = "amqp")]

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pillarbox::{connect, HandlerError, Job, Message, Worker, WorkerOptions};

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

    let handled = Arc::new(Mutex::new(HashSet::<String>::new()));
    let h = Arc::clone(&handled);
    let handler = move |job: Job| {
        let h = Arc::clone(&h);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await; // slow enough to leave a backlog
            h.lock().unwrap().insert(String::from_utf8_lossy(&job.message.payload).into_owned());
            Ok::<(), HandlerError>(())
        }
    };
    let options = WorkerOptions::default().concurrency(2).prefetch(8).poll_wait(Duration::from_millis(200));
    let worker = Worker::new(Arc::clone(&broker), &topic, "workers", handler, options).unwrap();
    let runner = worker.clone();
    let running = tokio::spawn(async move { runner.run().await });

    const N: usize = 300;
    let mut confirmed = Vec::new();
    let mut failed_calls = 0;
    let mut backlog_at_stop = 0;
    let pid_before = node_pid();
    for i in 0..N {
        if i == N / 3 {
            backlog_at_stop = broker.inspect(&topic, "workers").await.unwrap().ready;
            tokio::task::spawn_blocking(|| {
                script("stop-rabbitmq.sh");
                script("start-rabbitmq.sh");
            })
            .await
            .unwrap();
        }
        let body = format!("job-{i}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match broker.publish(&topic, vec![Message::new(body.clone())]).await {
                Ok(()) => {
                    confirmed.push(body);
                    break;
                }
                Err(e) => {
                    failed_calls += 1;
                    assert!(Instant::now() < deadline, "publish never recovered: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let missing: Vec<String> = {
            let seen = handled.lock().unwrap();
            confirmed.iter().filter(|b| !seen.contains(*b)).cloned().collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} confirmed messages never handled, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} publishes confirmed ({failed_calls} publish calls failed during the restart and were repeated); \
         {backlog_at_stop} waiting when the broker stopped; all handled",
        confirmed.len()
    );
    assert!(backlog_at_stop > 0, "nothing was waiting when the broker stopped: the test proves nothing");
    assert_ne!(node_pid(), pid_before, "the broker was not restarted: the test proves nothing");
    worker.shutdown();
    running.await.unwrap().unwrap();
}
