//! Publish and consume throughput as a new user meets it, on the embedded
//! backends or on the brokers given.
//!
//! ```sh
//! cargo bench -p pillarbox --bench throughput            # default sizes
//! PB_BENCH_N=50000 cargo bench -p pillarbox --bench throughput
//! PB_BENCH_URLS=redis://127.0.0.1:6390,amqp://127.0.0.1:5673/%2f?management_port=15673,kafka://127.0.0.1:19092 \
//!   cargo bench -p pillarbox --features redis,amqp,kafka --bench throughput
//! ```
//!
//! Prints one line per measurement: messages of 100 bytes, published one
//! at a time (each call waits for the broker, as a request handler would),
//! in batches of 100, and consumed by a worker (no-op handler) with
//! default options (concurrency 1, the read-ahead following the handlers),
//! at concurrency 1 and at 16 with four slots ahead per handler.

// Only the consume side of the shared helpers is used here.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pillarbox::{connect, Broker, Message, WorkerOptions};

use common::PAYLOAD;

fn rate(n: usize, took: Duration) -> String {
    format!("{:>9.0} msg/s  ({n} in {:.2} s)", n as f64 / took.as_secs_f64(), took.as_secs_f64())
}

async fn publish_singles(broker: &Arc<dyn Broker>, topic: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        broker.publish(topic, vec![Message::new(&PAYLOAD[..])]).await.unwrap();
    }
    started.elapsed()
}

async fn publish_batches(broker: &Arc<dyn Broker>, topic: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n / 100 {
        broker.publish(topic, (0..100).map(|_| Message::new(&PAYLOAD[..])).collect()).await.unwrap();
    }
    started.elapsed()
}

/// A worker with a no-op handler at `concurrency`, four slots ahead per handler.
async fn consume(broker: &Arc<dyn Broker>, topic: &str, n: usize, concurrency: usize) -> Duration {
    let options = WorkerOptions::default()
        .concurrency(concurrency)
        .prefetch(concurrency * 4)
        .poll_wait(Duration::from_millis(50));
    common::sdk_consume(broker, topic, n, options).await
}

async fn bench(label: &str, url: &str, n: usize) {
    let broker = connect(url).await.unwrap();
    let singles = (n / 10).max(100);
    let t = format!("bench-{}", std::process::id());
    broker.ensure_group(&format!("{t}-s"), "g").await.unwrap();
    broker.ensure_group(&format!("{t}-b"), "g").await.unwrap();
    broker.ensure_group(&format!("{t}-c"), "g").await.unwrap();
    println!(
        "{label:<8} publish, one per call     {}",
        rate(singles, publish_singles(&broker, &format!("{t}-s"), singles).await)
    );
    println!("{label:<8} publish, batches of 100   {}", rate(n, publish_batches(&broker, &format!("{t}-b"), n).await));
    let defaults = common::sdk_consume(&broker, &format!("{t}-b"), n, WorkerOptions::default()).await;
    println!("{label:<8} consume, default options  {}", rate(n, defaults));
    publish_batches(&broker, &format!("{t}-b"), n).await;
    println!("{label:<8} consume, concurrency 1    {}", rate(n, consume(&broker, &format!("{t}-b"), n, 1).await));
    publish_batches(&broker, &format!("{t}-c"), n).await;
    println!("{label:<8} consume, concurrency 16   {}", rate(n, consume(&broker, &format!("{t}-c"), n, 16).await));
    // Long jobs: none may wait on a busy worker while the other is idle.
    let (took, [a, b]) =
        common::slow_jobs_on_two_workers(&broker, &format!("{t}-slow"), 4, Duration::from_secs(1)).await;
    println!(
        "{label:<8} 4 jobs of 1 s on two default workers: {:.2} s (2 s if none waits), {a} and {b} each",
        took.as_secs_f64()
    );
    broker.close().await.unwrap();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; anything else is not for us.
    let n: usize = std::env::var("PB_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    if let Ok(urls) = std::env::var("PB_BENCH_URLS") {
        for url in urls.split(',').filter(|u| !u.is_empty()) {
            let label = url.split(':').next().unwrap_or(url);
            bench(label, url, n).await;
        }
        return;
    }
    bench("memory", "memory://bench", n).await;
    let dir = std::env::temp_dir().join(format!("pillarbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    bench("sqlite", &format!("sqlite://{}/bench.db", dir.display()), n).await;
    bench("sqlite*", &format!("sqlite://{}/bench-normal.db?synchronous=normal", dir.display()), n).await;
    println!("(sqlite: synchronous=full, the default; sqlite*: synchronous=normal)");
    let _ = std::fs::remove_dir_all(&dir);
}
