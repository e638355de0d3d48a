//! `pillarbox._native.Worker`: the core's worker over a Python handler.

use std::sync::Arc;
use std::time::Duration;

use pillarbox::{RetryPolicy, Worker, WorkerOptions};
use pyo3::prelude::*;

use crate::broker::PyBroker;
use crate::convert::{maybe_count, number, seconds, string};
use crate::errors::OrRaise;
use crate::handler::PyHandler;
use crate::operation::Operation;
use crate::runtime::{block_on, runtime};
use crate::stats::PyWorkerStats;

#[pyclass(frozen, name = "Worker", module = "pillarbox._native")]
pub struct PyWorker {
    worker: Worker,
    handler: Arc<PyHandler>,
}

fn duration(secs: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    secs.map(|s| seconds(s, name)).transpose()
}

#[pymethods]
impl PyWorker {
    /// Durations are seconds; the Python facade converts `timedelta`s.
    #[new]
    #[pyo3(signature = (broker, topic, group, invoke, is_async, *, concurrency=None, prefetch=None, max_retries=None,
        initial_delay=None, multiplier=None, max_delay=None, jitter=None, handler_timeout=None, lease=None,
        poll_wait=None, shutdown_grace=None, idempotency_store=None, idempotency_retention=None,
        busy_key_delay=None, consumer_name=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        broker: &Bound<'_, PyBroker>,
        topic: &str,
        group: &str,
        invoke: Py<PyAny>,
        is_async: bool,
        concurrency: Option<&Bound<'_, PyAny>>,
        prefetch: Option<&Bound<'_, PyAny>>,
        max_retries: Option<&Bound<'_, PyAny>>,
        initial_delay: Option<f64>,
        multiplier: Option<&Bound<'_, PyAny>>,
        max_delay: Option<f64>,
        jitter: Option<&Bound<'_, PyAny>>,
        handler_timeout: Option<f64>,
        lease: Option<f64>,
        poll_wait: Option<f64>,
        shutdown_grace: Option<f64>,
        idempotency_store: Option<&Bound<'_, PyAny>>,
        idempotency_retention: Option<f64>,
        busy_key_delay: Option<f64>,
        consumer_name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let defaults = RetryPolicy::default();
        let max_retries = maybe_count(max_retries, "max_retries", 0, u32::MAX as u64)?;
        let retry = RetryPolicy::retries(max_retries.map_or(defaults.max_retries, |n| n as u32))
            .with_backoff(
                duration(initial_delay, "initial_delay")?.unwrap_or(defaults.initial_delay),
                number(multiplier, "multiplier")?.unwrap_or(defaults.multiplier),
                duration(max_delay, "max_delay")?.unwrap_or(defaults.max_delay),
            )
            .with_jitter(number(jitter, "jitter")?.unwrap_or(defaults.jitter));
        let mut options = WorkerOptions::default().retry(retry);
        let concurrency =
            maybe_count(concurrency, "concurrency", 1, pillarbox::MAX_CONCURRENCY as u64)?.map(|n| n as usize);
        if let Some(n) = concurrency {
            options = options.concurrency(n);
        }
        if let Some(n) = maybe_count(prefetch, "prefetch", 0, u32::MAX as u64)? {
            options = options.prefetch(n as usize);
        }
        if let Some(t) = duration(handler_timeout, "handler_timeout")? {
            options = options.handler_timeout(t);
        }
        if let Some(d) = duration(lease, "lease")? {
            options = options.lease(d);
        }
        if let Some(d) = duration(poll_wait, "poll_wait")? {
            options = options.poll_wait(d);
        }
        if let Some(d) = duration(shutdown_grace, "shutdown_grace")? {
            options = options.shutdown_grace(d);
        }
        if let Some(d) = duration(idempotency_retention, "idempotency_retention")? {
            options = options.idempotency_retention(d);
        }
        if let Some(d) = duration(busy_key_delay, "busy_key_delay")? {
            options = options.busy_key_delay(d);
        }
        if let Some(name) = string(consumer_name, "consumer_name")? {
            options = options.consumer_name(name);
        }
        if let Some(url) = string(idempotency_store, "idempotency_store")? {
            let store = block_on(py, pillarbox::idempotency::open(&url))?.or_raise(py)?;
            options = options.idempotency_store(store);
        }
        let handler = Arc::new(PyHandler::new(invoke, is_async, options.concurrency)?);
        let shared: Arc<dyn pillarbox::Handler> = handler.clone();
        let worker = Worker::with_handler(broker.get().current(py)?, topic, group, shared, options).or_raise(py)?;
        Ok(PyWorker { worker, handler })
    }

    #[getter]
    fn consumer_name(&self) -> &str {
        self.worker.consumer_name()
    }

    fn stats(&self) -> PyWorkerStats {
        self.worker.stats().into()
    }

    fn shutdown(&self) {
        self.worker.shutdown();
    }

    /// Runs until shut down, blocking with the GIL released. Python's
    /// signal handlers run meanwhile; one that raises stops the worker at
    /// once (what it held returns to the broker after its lease).
    #[pyo3(signature = (event_loop=None))]
    fn run(&self, py: Python<'_>, event_loop: Option<Py<PyAny>>) -> PyResult<()> {
        self.handler.set_loop(py, event_loop)?;
        let worker = self.worker.clone();
        let task = runtime().spawn(async move { worker.run().await });
        let abort = task.abort_handle();
        let ended = block_on(py, task);
        self.handler.detach_loop(py);
        match ended {
            Ok(Ok(result)) => result.or_raise(py),
            Ok(Err(e)) => Err(pyo3::exceptions::PyRuntimeError::new_err(format!("the worker stopped: {e}"))),
            Err(interrupted) => {
                abort.abort();
                Err(interrupted)
            }
        }
    }

    /// Runs until shut down, with coroutines on `event_loop`.
    fn run_async(&self, py: Python<'_>, event_loop: Py<PyAny>) -> PyResult<Operation> {
        self.handler.set_loop(py, Some(event_loop))?;
        let worker = self.worker.clone();
        Ok(Operation::new(async move { worker.run().await }))
    }

    /// After `run_async`: the event loop stops watching for this worker's jobs.
    fn detach_loop(&self, py: Python<'_>) {
        self.handler.detach_loop(py);
    }
}
