//! What the broker benchmarks share: the SDK side of each measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pillarbox::{Broker, HandlerError, Job, Message, Worker, WorkerOptions};

/// 100-byte payloads.
pub const PAYLOAD: [u8; 100] = [b'x'; 100];
/// Messages per publish call.
pub const BATCH: usize = 100;

/// Publishes `n` messages in batches of [`BATCH`].
pub async fn sdk_publish(broker: &Arc<dyn Broker>, topic: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n / BATCH {
        broker.publish(topic, (0..BATCH).map(|_| Message::new(&PAYLOAD[..])).collect()).await.unwrap();
    }
    started.elapsed()
}

/// Consumes `n` messages with a no-op handler; group `g`.
pub async fn sdk_consume(broker: &Arc<dyn Broker>, topic: &str, n: usize, options: WorkerOptions) -> Duration {
    sdk_consume_timed(broker, topic, "g", n, options).await.all
}

/// How long a consume took: in all, and until the first message arrived
/// (joining the group, finding where to start).
#[derive(Clone, Copy, Debug)]
pub struct Consumed {
    pub all: Duration,
    pub first: Duration,
}

// Not every benchmark reports the steady rate.
#[allow(dead_code)]
impl Consumed {
    /// Messages per second after the first arrived.
    pub fn steady_rate(&self, n: usize) -> f64 {
        rate(n.saturating_sub(1), self.all.saturating_sub(self.first))
    }
}

/// Like [`sdk_consume`], also timing the first message (to the millisecond).
pub async fn sdk_consume_timed(
    broker: &Arc<dyn Broker>,
    topic: &str,
    group: &str,
    n: usize,
    options: WorkerOptions,
) -> Consumed {
    let handler = |_job: Job| async { Ok::<(), HandlerError>(()) };
    let worker = Worker::new(Arc::clone(broker), topic, group, handler, options).unwrap();
    let started = Instant::now();
    let runner = worker.clone();
    let task = tokio::spawn(async move { runner.run().await });
    let mut first = None;
    while worker.stats().succeeded < n as u64 {
        if first.is_none() && worker.stats().received > 0 {
            first = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let all = started.elapsed();
    worker.shutdown();
    task.await.unwrap().unwrap();
    Consumed { all, first: first.unwrap_or(all) }
}

/// Two workers with default options share `jobs` messages whose handler
/// takes `each`: how long until all were done, and how many each ran.
#[allow(dead_code)]
pub async fn slow_jobs_on_two_workers(
    broker: &Arc<dyn Broker>,
    topic: &str,
    jobs: usize,
    each: Duration,
) -> (Duration, [u64; 2]) {
    broker.ensure_group(topic, "g").await.unwrap();
    let handler = move |_job: Job| async move {
        tokio::time::sleep(each).await;
        Ok::<(), HandlerError>(())
    };
    let workers: Vec<Worker> = (0..2)
        .map(|_| Worker::new(Arc::clone(broker), topic, "g", handler, WorkerOptions::default()).unwrap())
        .collect();
    let tasks: Vec<_> = workers
        .iter()
        .map(|w| {
            let runner = w.clone();
            tokio::spawn(async move { runner.run().await })
        })
        .collect();
    let started = Instant::now();
    broker.publish(topic, (0..jobs).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    while workers.iter().map(|w| w.stats().succeeded).sum::<u64>() < jobs as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    for w in &workers {
        w.shutdown();
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    (took, [workers[0].stats().succeeded, workers[1].stats().succeeded])
}

/// Messages per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// A number from the environment, or a default.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
