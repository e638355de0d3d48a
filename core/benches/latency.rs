//! Latency from publish to handler, with the publisher in another process:
//! p50 and p99 at a fixed rate, per backend.
//!
//! ```sh
//! cargo bench -p pillarbox --bench latency                                   # sqlite:// only
//! cargo bench -p pillarbox --features redis,amqp,kafka --bench latency       # and every broker
//! PILLARBOX_URL=redis://127.0.0.1:6390 cargo bench -p pillarbox --features redis --bench latency
//! ```
//!
//! This process runs a `Worker` (no-op handler, default options) and
//! re-runs its own binary as the publisher (`PB_LATENCY_ROLE=publish`),
//! which publishes one message per call at a fixed rate (`PB_BENCH_RATE`,
//! default 200/s), on a schedule rather than after each publish returns,
//! so a slow publish is not hidden by the next one waiting. Each payload
//! carries its sequence number and the wall-clock time just before its
//! publish call; the handler subtracts that from its own clock (one
//! machine, one clock). The first `PB_BENCH_WARMUP` (default 50) are not
//! counted; then `PB_BENCH_N` (default 2,000) are.
//!
//! Without `PILLARBOX_URL`: sqlite:// (a fresh file), then Redis, RabbitMQ
//! and Kafka at their test URLs (`PILLARBOX_REDIS_URL`, `PILLARBOX_AMQP_URL`,
//! `PILLARBOX_KAFKA_URL` override them) when built with their feature; a
//! broker that does not answer is skipped with a message. memory:// is
//! private to one process, so it has no place here.

// Only `env_number` is used here.
#[allow(dead_code)]
mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::env_number;
use pillarbox::{connect, Broker, HandlerError, Job, Message, Worker, WorkerOptions};

const GROUP: &str = "latency";
/// A probe the worker must handle before the publisher starts: the group is
/// joined (Kafka assigns partitions) and every connection is up.
const PROBE: &[u8] = b"probe";

fn now_micros() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros() as u64
}

/// `SEQ MICROS` padded to 100 bytes, like the other benchmarks' payloads.
fn payload(seq: usize, sent: u64) -> Vec<u8> {
    let mut p = format!("{seq} {sent} ").into_bytes();
    p.resize(100, b'x');
    p
}

fn parse(payload: &[u8]) -> Option<(usize, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The child: publishes `warmup + n` messages at `rate`, one per call.
async fn publisher() {
    let url = std::env::var("PB_LATENCY_URL").unwrap();
    let topic = std::env::var("PB_LATENCY_TOPIC").unwrap();
    let total = env_number("PB_LATENCY_TOTAL", 0);
    let rate = env_number("PB_BENCH_RATE", 200) as f64;
    let broker = connect(&url).await.unwrap();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    for seq in 0..total {
        let at = started + interval.mul_f64(seq as f64);
        tokio::time::sleep_until(at.into()).await;
        broker.publish(&topic, vec![Message::new(payload(seq, now_micros()))]).await.unwrap();
    }
    broker.close().await.unwrap();
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// One backend: connect (or skip), start the worker, run the publisher
/// process, report.
async fn measure(label: &str, url: &str, n: usize, warmup: usize) {
    let topic = format!("latency-{}-{}", std::process::id(), fastrand_u32());
    let reachable = tokio::time::timeout(Duration::from_secs(20), async {
        let broker = connect(url).await?;
        broker.ensure_group(&topic, GROUP).await?;
        Ok::<_, pillarbox::Error>(broker)
    })
    .await;
    let broker: Arc<dyn Broker> = match reachable {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return println!("{label:<9} skipped: {} not reachable ({e})", pillarbox::url::redact(url)),
        Err(_) => return println!("{label:<9} skipped: {} did not answer within 20 s", pillarbox::url::redact(url)),
    };

    let samples = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let probed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = {
        let (samples, probed) = (Arc::clone(&samples), Arc::clone(&probed));
        move |job: Job| {
            let received = now_micros();
            if &job.message.payload[..] == PROBE {
                probed.store(true, std::sync::atomic::Ordering::Release);
            } else if let Some((seq, sent)) = parse(&job.message.payload) {
                if seq >= warmup {
                    samples.lock().unwrap().push(received.saturating_sub(sent));
                }
            }
            async { Ok::<(), HandlerError>(()) }
        }
    };
    let worker = Worker::new(Arc::clone(&broker), &topic, GROUP, handler, WorkerOptions::default()).unwrap();
    let runner = worker.clone();
    let task = tokio::spawn(async move { runner.run().await });

    let deadline = Instant::now() + Duration::from_secs(60);
    while !probed.load(std::sync::atomic::Ordering::Acquire) {
        assert!(Instant::now() < deadline, "{label}: the worker never handled the probe");
        broker.publish(&topic, vec![Message::new(PROBE)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let rate = env_number("PB_BENCH_RATE", 200);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("PB_LATENCY_ROLE", "publish")
        .env("PB_LATENCY_URL", url)
        .env("PB_LATENCY_TOPIC", &topic)
        .env("PB_LATENCY_TOTAL", (warmup + n).to_string())
        .env("PB_BENCH_RATE", rate.to_string())
        .stdin(Stdio::null())
        .spawn()
        .expect("start the publisher process");
    let expected = Duration::from_secs_f64((warmup + n) as f64 / rate as f64);
    let deadline = Instant::now() + expected * 2 + Duration::from_secs(30);
    while samples.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    worker.shutdown();
    task.await.unwrap().unwrap();
    broker.close().await.unwrap();

    let mut got = std::mem::take(&mut *samples.lock().unwrap());
    if !status.success() || got.len() < n {
        return println!("{label:<9} failed: publisher {status}, {} of {n} messages handled", got.len());
    }
    got.sort_unstable();
    println!(
        "{label:<9} {rate} msg/s, {n} messages: p50 {:>6.2} ms   p90 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms",
        percentile(&got, 0.50),
        percentile(&got, 0.90),
        percentile(&got, 0.99),
        percentile(&got, 1.0),
    );
}

fn fastrand_u32() -> u32 {
    (now_micros() as u32).wrapping_mul(2_654_435_761)
}

/// The backends to measure: `PILLARBOX_URL`, or each one built in.
fn targets(dir: &std::path::Path) -> Vec<(String, String)> {
    if let Ok(url) = std::env::var("PILLARBOX_URL") {
        let scheme = url.split(':').next().unwrap_or("url").to_string();
        return vec![(scheme, url)];
    }
    let env_or = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let mut all = vec![("sqlite".to_string(), format!("sqlite://{}/latency.db", dir.display()))];
    let brokers = [
        ("redis", "redis", "PILLARBOX_REDIS_URL", "redis://127.0.0.1:6390"),
        ("rabbitmq", "amqp", "PILLARBOX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5673/%2f"),
        ("kafka", "kafka", "PILLARBOX_KAFKA_URL", "kafka://127.0.0.1:19092"),
    ];
    for (label, feature, var, default) in brokers {
        let built = match feature {
            "redis" => cfg!(feature = "redis"),
            "amqp" => cfg!(feature = "amqp"),
            _ => cfg!(feature = "kafka"),
        };
        if built {
            all.push((label.to_string(), env_or(var, default)));
        } else {
            println!("{label:<9} skipped: built without the `{feature}` feature (cargo bench --features {feature})");
        }
    }
    all
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::var("PB_LATENCY_ROLE").as_deref() == Ok("publish") {
        return publisher().await;
    }
    let n = env_number("PB_BENCH_N", 2000);
    let warmup = env_number("PB_BENCH_WARMUP", 50);
    let dir = std::env::temp_dir().join(format!("pillarbox-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (label, url) in targets(&dir) {
        measure(&label, &url, n, warmup).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
