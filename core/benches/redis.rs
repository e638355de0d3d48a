//! Pillarbox on Redis beside redis-rs used directly and well, on the same
//! server in the same run: publish and consume rates for 100-byte messages.
//!
//! ```sh
//! bash tests/brokers/start-redis.sh        # redis on 127.0.0.1:6390
//! cargo bench -p pillarbox --features redis --bench redis
//! ```
//!
//! Raw publish: pipelined `XADD` in batches of 100 on one multiplexed
//! connection. Raw consume: `XREADGROUP COUNT 100 BLOCK` then one `XACK` of
//! the batch. Pillarbox: `publish` in batches of 100; a `Worker` with a
//! no-op handler (concurrency 16, prefetch 100), which adds metadata,
//! leases, the retry mover and per-message settlement on top.
//!
//! Also a `Worker` as a new user makes it (`WorkerOptions::default()`:
//! concurrency 1, the read-ahead following the handlers) with the no-op
//! handler, and two such workers sharing four jobs of a second each: done
//! in two seconds, two each, when neither holds a job the other could run.

mod common;

use std::time::{Duration, Instant};

use common::{env_number, rate, sdk_consume, sdk_publish, BATCH, PAYLOAD};
use pillarbox::{connect, WorkerOptions};
use redis::Value;

/// Messages per read: raw `XREADGROUP COUNT`, and half the SDK worker's
/// receive slots (`concurrency + prefetch`), since it fetches when half are free.
fn read_batch() -> usize {
    env_number("PB_BENCH_READ_BATCH", 100)
}

fn url() -> String {
    std::env::var("PILLARBOX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into())
}

async fn raw_publish(conn: &mut redis::aio::MultiplexedConnection, stream: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n / BATCH {
        let mut pipe = redis::pipe();
        for _ in 0..BATCH {
            pipe.cmd("XADD").arg(stream).arg("*").arg("payload").arg(&PAYLOAD[..]);
        }
        let _: Vec<String> = pipe.query_async(conn).await.unwrap();
    }
    started.elapsed()
}

async fn raw_consume(conn: &mut redis::aio::MultiplexedConnection, stream: &str, n: usize) -> Duration {
    let _: Value = redis::cmd("XGROUP").arg("CREATE").arg(stream).arg("g").arg("0").query_async(conn).await.unwrap();
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(read_batch())
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(conn)
            .await
            .unwrap();
        let ids: Vec<String> = reply.keys.into_iter().flat_map(|k| k.ids.into_iter().map(|e| e.id)).collect();
        if ids.is_empty() {
            continue;
        }
        let _: i64 = redis::cmd("XACK").arg(stream).arg("g").arg(&ids).query_async(conn).await.unwrap();
        done += ids.len();
    }
    started.elapsed()
}

/// The SDK worker: concurrency 16 (or `PB_BENCH_CONCURRENCY`) and as many
/// receive slots as make its reads `read_batch()` long.
fn worker_options() -> WorkerOptions {
    let concurrency = env_number("PB_BENCH_CONCURRENCY", 16);
    let prefetch = (2 * read_batch()).saturating_sub(concurrency);
    WorkerOptions::default().concurrency(concurrency).prefetch(prefetch).poll_wait(Duration::from_millis(200))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_number("PB_BENCH_N", 50_000);
    let rounds = env_number("PB_BENCH_ROUNDS", 3);
    let client = redis::Client::open(url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let broker = connect(&url()).await.unwrap();
    let run = std::process::id();
    let (mut rp, mut rc, mut sp, mut sc, mut sd) = (0f64, 0f64, 0f64, 0f64, 0f64);
    // Alternate raw and SDK rounds; keep each one's best.
    let only = std::env::var("PB_BENCH_ONLY").unwrap_or_default();
    for round in 0..rounds {
        if only == "sdk-publish" {
            let topic = format!("bench-prof-{run}-{round}");
            sp = sp.max(rate(n, sdk_publish(&broker, &topic, n).await));
            println!("sdk publish {sp:.0} msg/s");
            continue;
        }
        if only == "sdk-consume" {
            // For profiling: publish untimed, then time the consumer alone.
            let topic = format!("bench-prof-{run}-{round}");
            broker.ensure_group(&topic, "g").await.unwrap();
            sdk_publish(&broker, &topic, n).await;
            eprintln!("published; consuming");
            sc = sc.max(rate(n, sdk_consume(&broker, &topic, n, worker_options()).await));
            println!("sdk consume {sc:.0} msg/s");
            continue;
        }
        let stream = format!("bench-raw-{run}-{round}");
        if only == "raw-consume" {
            raw_publish(&mut raw, &stream, n).await;
            eprintln!("published; consuming");
            rc = rc.max(rate(n, raw_consume(&mut raw, &stream, n).await));
            println!("raw consume {rc:.0} msg/s");
            continue;
        }
        rp = rp.max(rate(n, raw_publish(&mut raw, &stream, n).await));
        rc = rc.max(rate(n, raw_consume(&mut raw, &stream, n).await));
        let _: i64 = redis::cmd("DEL").arg(&stream).query_async(&mut raw).await.unwrap();

        let topic = format!("bench-sdk-{run}-{round}");
        broker.ensure_group(&topic, "g").await.unwrap();
        sp = sp.max(rate(n, sdk_publish(&broker, &topic, n).await));
        sc = sc.max(rate(n, sdk_consume(&broker, &topic, n, worker_options()).await));
        let defaults = format!("{topic}-defaults");
        broker.ensure_group(&defaults, "g").await.unwrap();
        sdk_publish(&broker, &defaults, n).await;
        sd = sd.max(rate(n, sdk_consume(&broker, &defaults, n, WorkerOptions::default()).await));
        // Left behind, every run's streams would grow the server (and its append-only file).
        for topic in [&topic, &defaults] {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("pb:{{{topic}}}:*")).query_async(&mut raw).await.unwrap();
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut raw).await.unwrap();
        }
    }
    if !only.is_empty() {
        return;
    }
    println!("redis, {n} messages of 100 bytes, best of {rounds} rounds");
    println!("  publish  raw redis-rs {rp:>9.0} msg/s   pillarbox {sp:>9.0} msg/s   ratio {:.2}", sp / rp);
    println!("  consume  raw redis-rs {rc:>9.0} msg/s   pillarbox {sc:>9.0} msg/s   ratio {:.2}", sc / rc);
    println!("  consume  pillarbox with default options {sd:>9.0} msg/s   ratio to tuned {:.2}", sd / sc);
    let slow = format!("bench-slow-{run}");
    let (took, shares) = common::slow_jobs_on_two_workers(&broker, &slow, 4, Duration::from_secs(1)).await;
    println!(
        "  4 jobs of 1 s, two workers with default options: done in {:.2} s (2 s if none waits), {} and {} each",
        took.as_secs_f64(),
        shares[0],
        shares[1]
    );
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("pb:{{{slow}}}:*")).query_async(&mut raw).await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut raw).await.unwrap();
}
