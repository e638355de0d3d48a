//! Worker behaviour the core's unit tests show on a fault-injecting
//! wrapper of the memory backend, shown again on the real RabbitMQ and
//! Kafka, where the connection, not a lease, holds a received message.
#![cfg(all(feature = "amqp", feature = "kafka"))]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pillarbox::{HandlerError, Job, Message, Worker, WorkerOptions, WorkerStats};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000";
const KAFKA: &str = "kafka://127.0.0.1:19092";

fn topic(name: &str) -> String {
    format!("{name}{}x{}", std::process::id(), fastrand_like())
}

fn fastrand_like() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

/// Runs `worker` in the background.
fn start(worker: &Worker) -> tokio::task::JoinHandle<pillarbox::Result<()>> {
    let runner = worker.clone();
    tokio::spawn(async move { runner.run().await })
}

/// Waits until `done` holds for `worker`'s stats, failing after `limit`.
async fn until(worker: &Worker, limit: Duration, done: impl Fn(&WorkerStats) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(&worker.stats()) {
        assert!(Instant::now() < deadline, "not done after {limit:?}: {:?}", worker.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler still running at the end of the shutdown grace is stopped and
/// its message handed back, without counting an attempt: the next worker
/// gets it as attempt 1, and its idempotency claim was released.
async fn handed_back_after_the_grace(url: &str) {
    let broker = pillarbox::connect(url).await.unwrap();
    let t = topic("handback");
    broker.ensure_group(&t, "g").await.unwrap();
    broker.publish(&t, vec![Message::new("stuck").with_idempotency_key("k")]).await.unwrap();
    let options =
        WorkerOptions::default().poll_wait(Duration::from_millis(100)).shutdown_grace(Duration::from_millis(200));
    let stuck = |_: Job| async {
        tokio::time::sleep(Duration::from_secs(120)).await;
        Ok::<(), HandlerError>(())
    };
    let worker = Worker::new(Arc::clone(&broker), &t, "g", stuck, options.clone()).unwrap();
    let running = start(&worker);
    until(&worker, Duration::from_secs(60), |s| s.received >= 1).await;
    worker.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(worker.stats().released, 1, "{url}: {:?}", worker.stats());

    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    let record = move |job: Job| {
        seen.lock().unwrap().push(job.attempt());
        async { Ok::<(), HandlerError>(()) }
    };
    let next = Worker::new(Arc::clone(&broker), &t, "g", record, options).unwrap();
    let running = start(&next);
    until(&next, Duration::from_secs(60), |s| s.succeeded >= 1).await;
    next.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(*attempts.lock().unwrap(), vec![1], "{url}");
    assert_eq!(next.stats().deferred, 0, "{url}: the idempotency claim was not released");
    broker.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_hands_back_what_outlives_the_shutdown_grace() {
    handed_back_after_the_grace(AMQP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_hands_back_what_outlives_the_shutdown_grace() {
    handed_back_after_the_grace(KAFKA).await;
}

/// By default slow handlers hold nothing extra on RabbitMQ, which pushes
/// ahead to its consumers: a worker started after another still gets its
/// share of a backlog of slow messages, rather than finding them all held
/// by the first. (On Kafka a consumer owns whole partitions, whose messages
/// no other consumer could take anyway: there the default holds a batch
/// ahead, which kafka_backend.rs shows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_slow_handlers_hold_nothing_extra_by_default() {
    const SLOW: Duration = Duration::from_millis(400);
    let broker = pillarbox::connect(AMQP).await.unwrap();
    let t = topic("slow");
    broker.ensure_group(&t, "g").await.unwrap();
    broker.publish(&t, (0..6).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    let slow = |_: Job| async {
        tokio::time::sleep(SLOW).await;
        Ok::<(), HandlerError>(())
    };
    let options = WorkerOptions::default().poll_wait(Duration::from_millis(100));
    let first = Worker::new(Arc::clone(&broker), &t, "g", slow, options.clone()).unwrap();
    let started = Instant::now();
    let first_running = start(&first);
    until(&first, Duration::from_secs(60), |s| s.received >= 1).await;
    let second = Worker::new(Arc::clone(&broker), &t, "g", slow, options).unwrap();
    let second_running = start(&second);
    until(&first, Duration::from_secs(60), |_| first.stats().succeeded + second.stats().succeeded >= 6).await;
    let took = started.elapsed();
    for w in [&first, &second] {
        w.shutdown();
    }
    first_running.await.unwrap().unwrap();
    second_running.await.unwrap().unwrap();
    let (a, b) = (first.stats().succeeded, second.stats().succeeded);
    // Held by the first, the backlog would take 6 x SLOW and the second none.
    assert!(b >= 2, "the second worker handled {b} of 6 (the first {a}): the first held them");
    assert!(took < SLOW * 5, "6 slow messages on two workers took {took:?}");
    broker.close().await.unwrap();
}
