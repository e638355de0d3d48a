//! The Rust core's own publish and consume loops, which the Python and Node
//! benchmarks run beside themselves on the same broker in the same run: what
//! a binding costs is the difference. Not a public API for applications.

use std::time::{Duration, Instant};

use crate::{HandlerError, Job, Message, Result, Worker, WorkerOptions};

/// Publishes `count` messages of `size` bytes in batches of `batch` (1: one
/// awaited publish at a time) to `topic`; returns how long it took.
pub async fn publish(url: &str, topic: &str, count: usize, batch: usize, size: usize) -> Result<Duration> {
    let broker = crate::connect(url).await?;
    let batch = batch.max(1);
    let started = Instant::now();
    for _ in 0..count / batch {
        let messages = (0..batch).map(|_| Message::new(vec![b'x'; size])).collect();
        broker.publish(topic, messages).await?;
    }
    let took = started.elapsed();
    broker.close().await?;
    Ok(took)
}

/// Consumes `count` waiting messages of `topic` for `group` with a no-op
/// handler; returns how long it took.
pub async fn consume(
    url: &str,
    topic: &str,
    group: &str,
    count: u64,
    concurrency: usize,
    prefetch: usize,
) -> Result<Duration> {
    let broker = crate::connect(url).await?;
    let options =
        WorkerOptions::default().concurrency(concurrency).prefetch(prefetch).poll_wait(Duration::from_millis(200));
    let no_op = |_job: Job| async { Ok::<(), HandlerError>(()) };
    let worker = Worker::new(broker, topic, group, no_op, options)?;
    let runner = worker.clone();
    let started = Instant::now();
    let run = tokio::spawn(async move { runner.run().await });
    while worker.stats().succeeded < count {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    worker.shutdown();
    let _ = run.await;
    Ok(took)
}
