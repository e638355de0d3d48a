//! Pillarbox on Kafka beside rdkafka used directly and well, on the same
//! broker in the same run: publish and consume rates for 100-byte messages.
//!
//! ```sh
//! bash tests/brokers/start-kafka.sh        # Kafka on 127.0.0.1:19092
//! cargo bench -p pillarbox --features kafka --bench kafka
//! ```
//!
//! Both sides use the same producer settings (idempotence, acks=all,
//! linger 0, Pillarbox's default) and topics of 3 partitions. Raw publish: 100 records in
//! flight, then waiting for their delivery reports. Raw consume: one
//! consumer in a fresh group whose start offsets are committed before the
//! clock starts, by another consumer (as `ensure_group` commits a Pillarbox
//! group's; the measured consumer connects and joins on the clock, as a
//! worker's does), an asynchronous
//! commit of the position after every 100 messages (the usual at-least-once
//! loop), a synchronous one at the end, with the fetch settings Pillarbox's
//! consumer uses (librdkafka's 1 s `fetch.queue.backoff.ms` made its rate
//! swing by half from run to run). Pillarbox: `publish` in batches
//! of 100; a `Worker` with a no-op handler, concurrency 16 and 100 slots.
//!
//! `PB_BENCH_ONLY=raw|sdk` runs one side; `raw-consume`, `sdk-consume` (or
//! `sdk-consume-async`) publish untimed and then time the consumer alone,
//! for profiling. `PB_BENCH_N`, `PB_BENCH_ROUNDS`: messages, rounds;
//! `PB_BENCH_CONCURRENCY`, `PB_BENCH_PREFETCH`: the worker's concurrency
//! (16) and prefetch (100 slots in all by default). For many quick
//! consume-only runs, `PB_BENCH_ONLY=publish PB_BENCH_TOPIC=name` publishes
//! a backlog once; the consume-only modes given `PB_BENCH_TOPIC` then read
//! it in a new group each round instead of publishing their own.
//!
//! `PB_BENCH_ONLY=alternate PB_BENCH_TOPIC=name` reads such a backlog in
//! alternating rounds (raw, Pillarbox, Pillarbox `async`, then the other way
//! round), a new group each, and prints the median and best rate of each
//! side: the raw loop's rate is bimodal from run to run, so a best-of
//! comparison measures its lucky runs, the median the typical one.

// The timed consume replaces the plain one here.
#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::{env_number, rate, sdk_consume_timed, sdk_publish, Consumed, BATCH, PAYLOAD};
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

async fn raw_consume(topic: &str, group: &str, n: usize) -> Consumed {
    // The group starts from committed offsets, as a Pillarbox group does
    // (ensure_group commits them, before the clock): otherwise the raw side
    // alone pays a look-up of where to start (`auto.offset.reset`). They are
    // committed by a consumer of their own, so the measured one connects and
    // joins on the clock, as a Pillarbox worker's does.
    let committer: StreamConsumer =
        config().set("group.id", group).set("enable.auto.commit", "false").create().unwrap();
    let metadata = committer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    let mut start = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let (low, _) = committer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        start.add_partition_offset(topic, p, Offset::Offset(low)).unwrap();
    }
    committer.commit(&start, CommitMode::Sync).unwrap();
    drop(committer);
    let started = Instant::now();
    let consumer: StreamConsumer = config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut next = std::collections::HashMap::new();
    let mut first = Duration::ZERO;
    for i in 1..=n {
        let m = consumer.recv().await.unwrap();
        if i == 1 {
            first = started.elapsed();
        }
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
    Consumed { all: started.elapsed(), first }
}

/// The best of several consumes: the highest rates, the shortest wait for the first message.
#[derive(Default)]
struct Best {
    rate: f64,
    steady: f64,
    first: Option<Duration>,
}

impl Best {
    fn add(&mut self, n: usize, c: Consumed) {
        self.rate = self.rate.max(rate(n, c.all));
        self.steady = self.steady.max(c.steady_rate(n));
        self.first = Some(self.first.map_or(c.first, |f| f.min(c.first)));
    }

    fn first_ms(&self) -> f64 {
        self.first.unwrap_or_default().as_secs_f64() * 1000.0
    }
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn worker_options() -> WorkerOptions {
    let concurrency = env_number("PB_BENCH_CONCURRENCY", 16);
    WorkerOptions::default()
        .concurrency(concurrency)
        .prefetch(env_number("PB_BENCH_PREFETCH", BATCH.saturating_sub(concurrency)))
        .poll_wait(Duration::from_millis(200))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_number("PB_BENCH_N", 50_000);
    let rounds = env_number("PB_BENCH_ROUNDS", 3);
    let producer: FutureProducer = config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = config().create().unwrap();
    let broker = connect(&format!("kafka://{}?partitions=3", servers())).await.unwrap();
    let fast = connect(&format!("kafka://{}?partitions=3&record_deliveries=async", servers())).await.unwrap();
    let run = std::process::id();
    let (mut rp, mut sp) = (0f64, 0f64);
    let (mut rc, mut sc, mut sf) = (Best::default(), Best::default(), Best::default());
    let only = std::env::var("PB_BENCH_ONLY").unwrap_or_default();
    let backlog = std::env::var("PB_BENCH_TOPIC").ok().filter(|t| !t.is_empty());
    if only == "publish" {
        let topic = backlog.expect("PB_BENCH_ONLY=publish needs PB_BENCH_TOPIC");
        broker.ensure_group(&topic, "g").await.unwrap();
        println!("published {n} to {topic} at {:.0} msg/s", rate(n, sdk_publish(&broker, &topic, n).await));
        return;
    }
    if only == "alternate" {
        let topic =
            backlog.expect("PB_BENCH_ONLY=alternate reads a backlog: PB_BENCH_TOPIC (see PB_BENCH_ONLY=publish)");
        let mut rates: [Vec<f64>; 3] = Default::default();
        for round in 0..rounds {
            // Raw first, then raw last: a drift of the machine favours no side.
            let order = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for side in order {
                let group = format!("alt-{run}-{round}-{side}");
                let consumed = match side {
                    0 => raw_consume(&topic, &group, n).await,
                    _ => {
                        let b = if side == 1 { &broker } else { &fast };
                        b.ensure_group(&topic, &group).await.unwrap();
                        sdk_consume_timed(b, &topic, &group, n, worker_options()).await
                    }
                };
                rates[side].push(rate(n, consumed.all));
            }
            eprintln!(
                "round {round}: raw {:.0}, pillarbox {:.0}, async {:.0} msg/s",
                rates[0][round], rates[1][round], rates[2][round]
            );
        }
        let best = |side: usize| rates[side].iter().copied().fold(0.0, f64::max);
        let per_round = |side: usize| -> Vec<f64> { rates[side].iter().zip(&rates[0]).map(|(s, r)| s / r).collect() };
        println!("kafka, a backlog of {n} messages of 100 bytes read {rounds} times by each side, alternating");
        println!("  raw rdkafka              median {:>9.0} msg/s   best {:>9.0} msg/s", median(&rates[0]), best(0));
        for (side, name) in [(1, "pillarbox"), (2, "pillarbox, async")] {
            println!(
                "  {name:<24} median {:>9.0} msg/s   best {:>9.0} msg/s   ratio of medians {:.2}, median of the rounds' ratios {:.2}, of bests {:.2}",
                median(&rates[side]),
                best(side),
                median(&rates[side]) / median(&rates[0]),
                median(&per_round(side)),
                best(side) / best(0)
            );
        }
        return;
    }
    for round in 0..rounds {
        if only == "sdk-consume" || only == "sdk-consume-async" {
            // For profiling: publish untimed (or read the backlog), then time the consumer alone.
            let b = if only == "sdk-consume" { &broker } else { &fast };
            let (topic, group) = match &backlog {
                Some(topic) => (topic.clone(), format!("g-{run}-{round}")),
                None => (format!("bench-prof-{run}-{round}"), "g".to_string()),
            };
            b.ensure_group(&topic, &group).await.unwrap();
            if backlog.is_none() {
                sdk_publish(b, &topic, n).await;
            }
            eprintln!("published; consuming");
            sc.add(n, sdk_consume_timed(b, &topic, &group, n, worker_options()).await);
            println!("sdk consume {:.0} msg/s, after the first message {:.0} msg/s", sc.rate, sc.steady);
            continue;
        }
        if only.is_empty() || only.starts_with("raw") {
            let topic = match (&backlog, only.as_str()) {
                (Some(topic), "raw-consume") => topic.clone(),
                _ => {
                    let topic = format!("bench-raw-{run}-{round}");
                    let new = NewTopic::new(&topic, 3, TopicReplication::Fixed(1));
                    admin.create_topics([&new], &AdminOptions::new()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    rp = rp.max(rate(n, raw_publish(&producer, &topic, n).await));
                    topic
                }
            };
            if only == "raw-consume" {
                eprintln!("published; consuming");
            }
            rc.add(n, raw_consume(&topic, &format!("raw-{run}-{round}"), n).await);
            if only == "raw-consume" {
                println!("raw consume {:.0} msg/s, after the first message {:.0} msg/s", rc.rate, rc.steady);
                continue;
            }
        }
        if only.is_empty() || only.starts_with("sdk") {
            let topic = format!("bench-sdk-{run}-{round}");
            broker.ensure_group(&topic, "g").await.unwrap();
            sp = sp.max(rate(n, sdk_publish(&broker, &topic, n).await));
            sc.add(n, sdk_consume_timed(&broker, &topic, "g", n, worker_options()).await);
            let topic = format!("bench-sdk-async-{run}-{round}");
            fast.ensure_group(&topic, "g").await.unwrap();
            sdk_publish(&fast, &topic, n).await;
            sf.add(n, sdk_consume_timed(&fast, &topic, "g", n, worker_options()).await);
        }
    }
    if only.starts_with("sdk-consume") || only == "raw-consume" {
        return;
    }
    println!("kafka, {n} messages of 100 bytes, best of {rounds} rounds");
    println!("  publish  raw rdkafka {rp:>9.0} msg/s   pillarbox {sp:>9.0} msg/s   ratio {:.2}", sp / rp);
    println!(
        "  consume  raw rdkafka {:>9.0} msg/s   pillarbox {:>9.0} msg/s   ratio {:.2}",
        rc.rate,
        sc.rate,
        sc.rate / rc.rate
    );
    println!(
        "  consume, record_deliveries=async      pillarbox {:>9.0} msg/s   ratio {:.2}",
        sf.rate,
        sf.rate / rc.rate
    );
    println!(
        "  of which: the first message after     raw {:.0} ms, pillarbox {:.0} ms, async {:.0} ms",
        rc.first_ms(),
        sc.first_ms(),
        sf.first_ms()
    );
    println!(
        "            then                        raw {:.0} msg/s, pillarbox {:.0} msg/s (ratio {:.2}), async {:.0} msg/s (ratio {:.2})",
        rc.steady,
        sc.steady,
        sc.steady / rc.steady,
        sf.steady,
        sf.steady / rc.steady
    );
}
