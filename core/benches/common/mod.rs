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

/// Messages per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// A number from the environment, or a default.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
