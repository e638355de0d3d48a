//! The Rust core's own figures, measured from the Python benchmark on the
//! same broker in the same run (`benches/compare.py`): what the Python
//! layer costs is the difference.

use std::time::{Duration, Instant};

use pillarbox::{HandlerError, Job, Message, Worker, WorkerOptions};
use pyo3::prelude::*;

use crate::errors::OrRaise;
use crate::runtime::block_on;

/// Publishes `count` messages of `size` bytes in batches of `batch` (1: one
/// awaited publish at a time); returns the seconds it took.
#[pyfunction]
pub fn _bench_publish(
    py: Python<'_>,
    url: String,
    topic: String,
    count: usize,
    batch: usize,
    size: usize,
) -> PyResult<f64> {
    let run = async move {
        let broker = pillarbox::connect(&url).await?;
        let started = Instant::now();
        for _ in 0..count / batch.max(1) {
            let messages = (0..batch.max(1)).map(|_| Message::new(vec![b'x'; size])).collect();
            broker.publish(&topic, messages).await?;
        }
        let took = started.elapsed().as_secs_f64();
        broker.close().await?;
        pillarbox::Result::Ok(took)
    };
    block_on(py, run)?.or_raise(py)
}

/// Consumes `count` waiting messages with a no-op Rust handler; returns the seconds it took.
#[pyfunction]
pub fn _bench_consume(
    py: Python<'_>,
    url: String,
    topic: String,
    group: String,
    count: u64,
    concurrency: usize,
    prefetch: usize,
) -> PyResult<f64> {
    let run = async move {
        let broker = pillarbox::connect(&url).await?;
        let options =
            WorkerOptions::default().concurrency(concurrency).prefetch(prefetch).poll_wait(Duration::from_millis(200));
        let no_op = |_job: Job| async { Ok::<(), HandlerError>(()) };
        let worker = Worker::new(broker, &topic, &group, no_op, options)?;
        let runner = worker.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move { runner.run().await });
        while worker.stats().succeeded < count {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = started.elapsed().as_secs_f64();
        worker.shutdown();
        let _ = task.await;
        pillarbox::Result::Ok(took)
    };
    block_on(py, run)?.or_raise(py)
}
