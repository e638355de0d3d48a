//! Pillarbox on Kafka beside rdkafka used directly and well, on the same
//! broker in the same run: publish and consume rates for 100-byte messages.
//!
//! ```sh
//! bash tests/brokers/start-kafka.sh        # Kafka on 127.0.0.1:19092
//! cargo bench -p pillarbox --features kafka --bench kafka
//! ```
//!
//! Both sides use the same producer settings (idempotence, acks=all,
//! linger 5 ms) and topics of 3 partitions. Raw publish: 100 records in
//! flight, then waiting for their delivery reports. Raw consume: one
//! consumer in a fresh group from the earliest offset, an asynchronous
//! commit of the position after every 100 messages (the usual at-least-once
//! loop), a synchronous one at the end. Pillarbox: `publish` in batches
//! of 100; a `Worker` with a no-op handler, concurrency 16 and 100 slots.
//!
//! `PB_BENCH_ONLY=raw|sdk` runs one side; `raw-consume`, `sdk-consume` (or
//! `sdk-consume-async`) publish untimed and then time the consumer alone,
//! for profiling. `PB_BENCH_N`, `PB_BENCH_ROUNDS`: messages, rounds;
//! `PB_BENCH_PREFETCH`: the worker's prefetch (84).

mod common;

use std::time::{Duration, Instant};

use common::{env_number, rate, sdk_consume, sdk_publish, BATCH, PAYLOAD};
use pillarbox::{connect, WorkerOptions};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

fn servers() -> String {
    std::env::var("PILLARBOX_KAFKA_SERVERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers());
    c
}

async fn raw_publish(producer: &FutureProducer, topic: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n / BATCH {
        let pending: Vec<_> = (0..BATCH)
            .map(|_| producer.send_result(FutureRecord::<(), _>::to(topic).payload(&PAYLOAD[..])).unwrap())
            .collect();
        for f in pending {
            f.await.unwrap().unwrap();
        }
    }
    started.elapsed()
}

async fn raw_consume(topic: &str, group: &str, n: usize) -> Duration {
    let consumer: StreamConsumer = config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let started = Instant::now();
    let mut next = std::collections::HashMap::new();
    for i in 1..=n {
        let m = consumer.recv().await.unwrap();
        let _ = std::hint::black_box(m.payload());
        next.insert(m.partition(), m.offset() + 1);
        if i % BATCH != 0 && i != n {
            continue;
        }
        let mut positions = TopicPartitionList::new();
        for (p, o) in &next {
            positions.add_partition_offset(topic, *p, Offset::Offset(*o)).unwrap();
        }
        if i == n {
            consumer.commit(&positions, CommitMode::Sync).unwrap();
        } else if i % BATCH == 0 {
            consumer.commit(&positions, CommitMode::Async).unwrap();
        }
    }
    started.elapsed()
}

fn worker_options() -> WorkerOptions {
    WorkerOptions::default()
        .concurrency(16)
        .prefetch(env_number("PB_BENCH_PREFETCH", BATCH - 16))
        .poll_wait(Duration::from_millis(200))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_number("PB_BENCH_N", 50_000);
    let rounds = env_number("PB_BENCH_ROUNDS", 3);
    let producer: FutureProducer = config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = config().create().unwrap();
    let broker = connect(&format!("kafka://{}?partitions=3", servers())).await.unwrap();
    let fast = connect(&format!("kafka://{}?partitions=3&record_deliveries=async", servers())).await.unwrap();
    let run = std::process::id();
    let (mut rp, mut rc, mut sp, mut sc, mut sf) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let only = std::env::var("PB_BENCH_ONLY").unwrap_or_default();
    for round in 0..rounds {
        if only == "sdk-consume" || only == "sdk-consume-async" {
            // For profiling: publish untimed, then time the consumer alone.
            let b = if only == "sdk-consume" { &broker } else { &fast };
            let topic = format!("bench-prof-{run}-{round}");
            b.ensure_group(&topic, "g").await.unwrap();
            sdk_publish(b, &topic, n).await;
            eprintln!("published; consuming");
            sc = sc.max(rate(n, sdk_consume(b, &topic, n, worker_options()).await));
            println!("sdk consume {sc:.0} msg/s");
            continue;
        }
        if only.is_empty() || only.starts_with("raw") {
            let topic = format!("bench-raw-{run}-{round}");
            let new = NewTopic::new(&topic, 3, TopicReplication::Fixed(1));
            admin.create_topics([&new], &AdminOptions::new()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            rp = rp.max(rate(n, raw_publish(&producer, &topic, n).await));
            if only == "raw-consume" {
                eprintln!("published; consuming");
            }
            rc = rc.max(rate(n, raw_consume(&topic, &format!("raw-{run}-{round}"), n).await));
            if only == "raw-consume" {
                println!("raw consume {rc:.0} msg/s");
                continue;
            }
        }
        if only.is_empty() || only.starts_with("sdk") {
            let topic = format!("bench-sdk-{run}-{round}");
            broker.ensure_group(&topic, "g").await.unwrap();
            sp = sp.max(rate(n, sdk_publish(&broker, &topic, n).await));
            sc = sc.max(rate(n, sdk_consume(&broker, &topic, n, worker_options()).await));
            let topic = format!("bench-sdk-async-{run}-{round}");
            fast.ensure_group(&topic, "g").await.unwrap();
            sdk_publish(&fast, &topic, n).await;
            sf = sf.max(rate(n, sdk_consume(&fast, &topic, n, worker_options()).await));
        }
    }
    if only.starts_with("sdk-consume") || only == "raw-consume" {
        return;
    }
    println!("kafka, {n} messages of 100 bytes, best of {rounds} rounds");
    println!("  publish  raw rdkafka {rp:>9.0} msg/s   pillarbox {sp:>9.0} msg/s   ratio {:.2}", sp / rp);
    println!("  consume  raw rdkafka {rc:>9.0} msg/s   pillarbox {sc:>9.0} msg/s   ratio {:.2}", sc / rc);
    println!("  consume, record_deliveries=async      pillarbox {sf:>9.0} msg/s   ratio {:.2}", sf / rc);
}
