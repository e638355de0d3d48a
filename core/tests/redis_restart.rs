//! Redis restarts in the middle of a run: no acknowledged publish is lost
//! and every message is handled. Runs its own redis-server (from PATH; the
//! test command installs it) on a free port, with append-only persistence
//! fsynced on every write, kills it with SIGKILL mid-run and starts it again.
#![cfg(feature = "redis")]

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pillarbox::{connect, Worker, WorkerOptions};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the server when the test ends, even on a failed assertion.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(port: u16, dir: &Path) -> Server {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", "always", "--dir", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be on PATH (tests/brokers/start-redis.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

async fn run_id(url: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("run_id:")).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_run_loses_no_acknowledged_publish() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pillarbox-redis-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = start_redis(port, &dir);

    let url = format!("redis://127.0.0.1:{port}");
    let broker = connect(&url).await.unwrap();
    broker.ensure_group("jobs", "workers").await.unwrap();

    let handled: support::Seen = Default::default();
    let handler = support::recording_handler(&handled);
    let options =
        WorkerOptions::default().concurrency(1).poll_wait(Duration::from_millis(200)).lease(Duration::from_secs(3));
    let worker = Worker::new(Arc::clone(&broker), "jobs", "workers", handler, options).unwrap();
    let runner = worker.clone();
    let running = tokio::spawn(async move { runner.run().await });

    const N: usize = 300;
    let mut acknowledged = Vec::new();
    let mut failed_attempts = 0;
    let first_run = run_id(&url).await;
    let mut backlog_at_kill = 0;
    for i in 0..N {
        if i == N / 3 {
            backlog_at_kill = broker.inspect("jobs", "workers").await.unwrap().ready;
            drop(server); // SIGKILL: no chance to save anything more
            tokio::time::sleep(Duration::from_millis(500)).await;
            server = start_redis(port, &dir);
        }
        let body = format!("job-{i}");
        failed_attempts += support::publish_until_taken(broker.as_ref(), "jobs", &body, Duration::from_secs(60)).await;
        acknowledged.push(body);
    }
    support::wait_all_seen(&handled, &acknowledged, Duration::from_secs(90)).await;
    support::report(&format!(
        "Redis SIGKILL (append-only, fsync always): {} publishes acknowledged ({failed_attempts} publish calls failed \
         during the restart and were repeated); {backlog_at_kill} waiting when the server was killed; lost 0",
        acknowledged.len()
    ));
    assert_ne!(run_id(&url).await, first_run, "the server was not restarted: the test proves nothing");
    assert!(backlog_at_kill > 0, "nothing was waiting when the server died: the test proves nothing");
    worker.shutdown();
    running.await.unwrap().unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
