//! The Rust core's own figures, measured from the Python benchmark on the
//! same broker in the same run (`benches/compare.py`): what the Python
//! layer costs is the difference. The loops are the core's
//! (`pillarbox::baseline`), shared with the Node benchmark.

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
    let run = async move { pillarbox::baseline::publish(&url, &topic, count, batch, size).await };
    Ok(block_on(py, run)?.or_raise(py)?.as_secs_f64())
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
    let run = async move { pillarbox::baseline::consume(&url, &topic, &group, count, concurrency, prefetch).await };
    Ok(block_on(py, run)?.or_raise(py)?.as_secs_f64())
}
