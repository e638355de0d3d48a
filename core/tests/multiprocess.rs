//! sqlite:// shared by several processes: two publisher processes and two
//! worker processes on one file, at once. Every message is handled exactly
//! once. (What a Django web process and a worker process do.)
//!
//! Also: a consumer idle in another process wakes as soon as a message is
//! published, not at its next poll.
//!
//! The tests re-run their own binary as the child processes, selected by the
//! `PB_MP_ROLE` environment variable.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pillarbox::{connect, HandlerError, Job, Message, ReceiveRequest, Worker, WorkerOptions};

const TOPIC: &str = "orders";
const GROUP: &str = "fulfil";
const PER_PUBLISHER: usize = 150;

fn child(role: &str, db: &PathBuf, extra: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--nocapture", "--test-threads=1"])
        .env("PB_MP_ROLE", role)
        .env("PB_MP_DB", db)
        .env("PB_MP_ARG", extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[test]
fn publishers_and_workers_in_separate_processes() {
    if std::env::var("PB_MP_ROLE").is_ok() {
        return; // a child runs only `child_process`
    }
    // A fresh directory: a run that failed before may have left a database
    // (and its WAL) under a process id that has come round again.
    let dir = std::env::temp_dir().join(format!("pillarbox-mp-{}-{}", std::process::id(), fastrand_suffix()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("queue.db");
    let done_marker = dir.join("publishers-done");

    let workers: Vec<_> = (0..2).map(|i| child("consume", &db, &format!("w{i}"))).collect();
    let publishers: Vec<_> = (0..2).map(|i| child("publish", &db, &format!("p{i}"))).collect();
    for p in publishers {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "publisher failed");
    }
    std::fs::write(&done_marker, b"").unwrap();
    let mut handled = Vec::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker failed");
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            // libtest may print its own "test ... " on the same line first.
            .filter_map(|l| l.find("handled ").map(|at| l[at + "handled ".len()..].to_string()))
            .collect();
        per_worker.push(lines.len());
        handled.extend(lines);
    }
    let total = handled.len();
    handled.sort();
    handled.dedup();
    assert_eq!(total, 2 * PER_PUBLISHER, "handled {total} (per worker {per_worker:?})");
    assert_eq!(handled.len(), 2 * PER_PUBLISHER, "duplicates among {total}");
    eprintln!("per worker: {per_worker:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rounds of the wake-up test.
const WAKE_ROUNDS: usize = 3;

/// A consumer in another process, idle in `receive` with a 5 s poll,
/// receives each message published here well within a second: publishing
/// wakes it (the sidecar sockets, `backends/embedded/wake.rs`). Without the
/// wake-up each round would take until its next poll, about 5 s.
#[test]
fn an_idle_consumer_in_another_process_wakes_when_a_message_is_published() {
    if std::env::var("PB_MP_ROLE").is_ok() {
        return;
    }
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("pillarbox-wake-{}-{}", std::process::id(), fastrand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("queue.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broker = runtime.block_on(async {
        let broker = connect(&format!("sqlite://{}", db.display())).await.unwrap();
        broker.ensure_group("wake", GROUP).await.unwrap();
        broker
    });
    let mut consumer = child("idle", &db, "");
    // Its lines, read on a thread so that every wait below is bounded.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = consumer.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str, within: Duration| -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no `{what}` from the consumer within {within:?} ({e})"),
            }
        }
    };
    let mut took = Vec::new();
    for round in 0..WAKE_ROUNDS {
        next("receiving", Duration::from_secs(30));
        // Past its first look: idle, until its next poll 5 s away.
        std::thread::sleep(Duration::from_millis(300));
        let published = std::time::Instant::now();
        runtime.block_on(broker.publish("wake", vec![Message::new(format!("m{round}"))])).unwrap();
        let line = next("received", Duration::from_secs(10));
        took.push(published.elapsed());
        assert!(line.ends_with(&format!("m{round}")), "{line}");
    }
    let status = consumer.wait().unwrap();
    assert!(status.success(), "the consumer failed");
    assert!(took.iter().all(|t| *t < Duration::from_secs(1)), "publish to receive: {took:?}");
    eprintln!("publish to receive in another process: {took:?}");
    runtime.block_on(broker.close()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(role) = std::env::var("PB_MP_ROLE") else { return };
    let db = PathBuf::from(std::env::var("PB_MP_DB").unwrap());
    let name = std::env::var("PB_MP_ARG").unwrap();
    if role == "idle" {
        return idle_consumer(&db).await;
    }
    let url = format!("sqlite://{}", db.display());
    let broker = connect(&url).await.unwrap();
    broker.ensure_group(TOPIC, GROUP).await.unwrap();
    match role.as_str() {
        "publish" => {
            // Singles and batches, interleaved with the other publisher.
            for chunk in (0..PER_PUBLISHER).collect::<Vec<_>>().chunks(10) {
                for i in &chunk[..5] {
                    broker.publish(TOPIC, vec![Message::new(format!("{name}-{i}"))]).await.unwrap();
                }
                broker
                    .publish(TOPIC, chunk[5..].iter().map(|i| Message::new(format!("{name}-{i}"))).collect())
                    .await
                    .unwrap();
            }
        }
        "consume" => {
            let handler = |job: Job| async move {
                println!("handled {}", String::from_utf8_lossy(&job.message.payload));
                Ok::<(), HandlerError>(())
            };
            let options = WorkerOptions::default().concurrency(2).poll_wait(Duration::from_millis(100));
            let worker = Worker::new(Arc::clone(&broker), TOPIC, GROUP, handler, options).unwrap();
            let runner = worker.clone();
            let task = tokio::spawn(async move { runner.run().await });
            let marker = db.parent().unwrap().join("publishers-done");
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let s = broker.inspect(TOPIC, GROUP).await.unwrap();
                if marker.exists() && s.ready == 0 && s.in_flight == Some(0) && s.waiting == 0 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "gave up waiting: {s:?}");
            }
            worker.shutdown();
            task.await.unwrap().unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

/// Receives `WAKE_ROUNDS` messages one at a time, polling only every 5 s,
/// and says when it starts waiting and what it received.
async fn idle_consumer(db: &std::path::Path) {
    let broker = connect(&format!("sqlite://{}?poll_ms=5000", db.display())).await.unwrap();
    for _ in 0..WAKE_ROUNDS {
        println!("receiving");
        let request = ReceiveRequest {
            topic: "wake",
            group: GROUP,
            consumer: "idle",
            max: 1,
            window: 1,
            wait: Duration::from_secs(8),
            lease: Duration::from_secs(30),
        };
        let got = broker.receive(request).await.unwrap();
        assert_eq!(got.len(), 1, "nothing within the wait");
        println!("received {}", String::from_utf8_lossy(&got[0].message.payload));
        broker.ack(&got).await.unwrap();
    }
    broker.close().await.unwrap();
}
