//! Pillarbox on RabbitMQ beside lapin used directly and well, on the same
//! broker in the same run: publish and consume rates for 100-byte messages.
//!
//! ```sh
//! bash tests/brokers/start-rabbitmq.sh     # RabbitMQ on 127.0.0.1:5673
//! cargo bench -p pillarbox --features amqp --bench amqp
//! ```
//!
//! Raw publish: persistent messages to a quorum queue, 100 in flight (their
//! frames queued together), then waiting for their confirms; measured twice:
//! through the default exchange (straight to the queue, the cheapest route
//! RabbitMQ has), and through a durable topic exchange bound `#` to the
//! queue, as Pillarbox routes a topic to its groups (the same work for the
//! broker: like for like). Raw consume:
//! prefetch 100, one ack with `multiple` per 100. Pillarbox: `publish` in
//! batches of 100 (confirmed); a `Worker` with a no-op handler, concurrency
//! 16 and 100 receive slots.
//!
//! For profiling: `PB_BENCH_ONLY=raw-consume` or `sdk-consume` (publish
//! untimed, time the consumer alone), `PB_BENCH_PREFETCH` (the worker's
//! prefetch, 84), `PB_BENCH_ACK_EVERY` (the raw consumer's ack interval, 100).

mod common;

use std::time::{Duration, Instant};

use common::{env_number, rate, sdk_consume, sdk_publish, BATCH, PAYLOAD};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use pillarbox::{connect, WorkerOptions};

fn url() -> String {
    std::env::var("PILLARBOX_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673".into())
}

/// Publishes `n` messages to `exchange` with routing key `key`.
async fn raw_publish(conn: &Connection, exchange: &str, key: &str, n: usize) -> Duration {
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let started = Instant::now();
    for _ in 0..n / BATCH {
        // All of a batch's frames queued at once, in order (each publish
        // queues its frames when first polled), rather than waiting for
        // lapin's writer after each: then the confirms.
        let sends = (0..BATCH).map(|_| {
            let props = BasicProperties::default().with_delivery_mode(2);
            channel.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), &PAYLOAD, props)
        });
        let confirms = futures_util::future::try_join_all(sends).await.unwrap();
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
    }
    started.elapsed()
}

async fn raw_consume(conn: &Connection, queue: &str, n: usize) -> Duration {
    let channel = conn.create_channel().await.unwrap();
    channel.basic_qos(BATCH as u16, BasicQosOptions::default()).await.unwrap();
    let started = Instant::now();
    let mut consumer = channel
        .basic_consume(queue.into(), "raw".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut done = 0;
    let ack_every = env_number("PB_BENCH_ACK_EVERY", BATCH);
    while done < n {
        let d = consumer.next().await.unwrap().unwrap();
        done += 1;
        if done % ack_every == 0 || done == n {
            channel.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true }).await.unwrap();
        }
    }
    let took = started.elapsed();
    let _ = channel.close(200, "done".into()).await;
    took
}

/// Deletes what the SDK declared for `topic` and group `g` (its queue, wait
/// queues, dead-letter queue and exchanges), so rounds do not pile up
/// quorum queues on the broker.
async fn delete_sdk_topic(conn: &Connection, topic: &str) {
    let admin = conn.create_channel().await.unwrap();
    let mut queues = vec![format!("{topic}.g"), format!("{topic}.g.dlq")];
    queues.extend(WAIT_LEVELS.iter().map(|l| format!("{topic}.g.wait.{l}")));
    for q in queues {
        admin.queue_delete(q.as_str().into(), Default::default()).await.unwrap();
    }
    for e in [topic.to_string(), format!("{topic}.delay")] {
        admin.exchange_delete(e.as_str().into(), Default::default()).await.unwrap();
    }
    let _ = admin.close(200, "cleaned".into()).await;
}

/// The delay levels (ms) of the AMQP backend (`LEVELS` there): one wait queue each per group.
const WAIT_LEVELS: [u64; 9] = [10, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000, 21_600_000, 86_400_000];

/// The SDK worker: concurrency 16 and 100 receive slots, like the raw prefetch.
fn worker_options() -> WorkerOptions {
    WorkerOptions::default()
        .concurrency(16)
        .prefetch(env_number("PB_BENCH_PREFETCH", BATCH - 16))
        .poll_wait(Duration::from_millis(200))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_number("PB_BENCH_N", 20_000);
    let rounds = env_number("PB_BENCH_ROUNDS", 3);
    let raw_url = url().split('?').next().unwrap().to_string();
    let conn = Connection::connect(&raw_url, ConnectionProperties::default()).await.unwrap();
    let broker = connect(&url()).await.unwrap();
    let run = std::process::id();
    let (mut rp, mut rt, mut rc, mut sp, mut sc) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let only = std::env::var("PB_BENCH_ONLY").unwrap_or_default();
    for round in 0..rounds {
        if only == "sdk-consume" {
            // For profiling: publish untimed, then time the consumer alone.
            let topic = format!("bench-prof-{run}-{round}");
            broker.ensure_group(&topic, "g").await.unwrap();
            sdk_publish(&broker, &topic, n).await;
            eprintln!("published; consuming");
            sc = sc.max(rate(n, sdk_consume(&broker, &topic, n, worker_options()).await));
            println!("sdk consume {sc:.0} msg/s");
            delete_sdk_topic(&conn, &topic).await;
            continue;
        }
        let queue = format!("bench-raw-{run}-{round}");
        let admin = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        admin
            .queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await
            .unwrap();
        if only == "raw-consume" {
            raw_publish(&conn, "", &queue, n).await;
            eprintln!("published; consuming");
            rc = rc.max(rate(n, raw_consume(&conn, &queue, n).await));
            println!("raw consume {rc:.0} msg/s");
            admin.queue_delete(queue.as_str().into(), Default::default()).await.unwrap();
            continue;
        }
        rp = rp.max(rate(n, raw_publish(&conn, "", &queue, n).await));
        rc = rc.max(rate(n, raw_consume(&conn, &queue, n).await));
        // The same queue behind a topic exchange bound `#`, as a group's queue is.
        let exchange = format!("{queue}.x");
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        admin
            .exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .unwrap();
        admin
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        rt = rt.max(rate(n, raw_publish(&conn, &exchange, "", n).await));
        admin.queue_delete(queue.as_str().into(), Default::default()).await.unwrap();
        admin.exchange_delete(exchange.as_str().into(), Default::default()).await.unwrap();

        let topic = format!("bench-sdk-{run}-{round}");
        broker.ensure_group(&topic, "g").await.unwrap();
        sp = sp.max(rate(n, sdk_publish(&broker, &topic, n).await));
        sc = sc.max(rate(n, sdk_consume(&broker, &topic, n, worker_options()).await));
        delete_sdk_topic(&conn, &topic).await;
    }
    if !only.is_empty() {
        return;
    }
    println!("rabbitmq, {n} messages of 100 bytes, best of {rounds} rounds");
    println!(
        "  publish  raw lapin, topic exchange   {rt:>9.0} msg/s   pillarbox {sp:>9.0} msg/s   ratio {:.2}",
        sp / rt
    );
    println!(
        "  publish  raw lapin, default exchange {rp:>9.0} msg/s   pillarbox {sp:>9.0} msg/s   ratio {:.2}",
        sp / rp
    );
    println!(
        "  consume  raw lapin                   {rc:>9.0} msg/s   pillarbox {sc:>9.0} msg/s   ratio {:.2}",
        sc / rc
    );
}
