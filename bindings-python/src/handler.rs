//! The core's `Handler` over a Python callable: the bridge every worker
//! and the conformance suite go through.
//!
//! The Python side (`pillarbox._handlers.invoker`) calls the user's handler
//! and reports an outcome: `None` for success, or `(kind, message,
//! retryable, retry_after)`. Plain functions run on the runtime's blocking
//! threads, taking the GIL only for the call; coroutines run on an asyncio
//! loop, and are cancelled when the core gives up on the attempt (its
//! future dropped on timeout or at the end of the shutdown grace).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pillarbox::{HandlerError, Job};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::sync::oneshot;

use crate::job::PyJob;

pub struct PyHandler {
    invoke: Arc<Py<PyAny>>,
    is_async: bool,
    /// Where coroutines run: set when the worker starts.
    event_loop: Mutex<Option<Arc<Py<PyAny>>>>,
}

impl PyHandler {
    pub fn new(invoke: Py<PyAny>, is_async: bool) -> Self {
        PyHandler { invoke: Arc::new(invoke), is_async, event_loop: Mutex::new(None) }
    }

    /// Where coroutines run from now on.
    pub fn set_loop(&self, event_loop: Option<Py<PyAny>>) {
        *self.event_loop.lock().unwrap_or_else(|e| e.into_inner()) = event_loop.map(Arc::new);
    }

    async fn call(&self, job: Job) -> Result<(), HandlerError> {
        let invoke = Arc::clone(&self.invoke);
        let outcome = tokio::task::spawn_blocking(move || {
            Python::attach(|py| -> Result<(), HandlerError> {
                let job = PyJob::new(py, job).map_err(|e| failure(py, e))?;
                let result = invoke.bind(py).call1((job,)).map_err(|e| failure(py, e))?;
                outcome(&result)
            })
        })
        .await;
        outcome.unwrap_or_else(|e| Err(HandlerError::retryable(e.to_string()).with_kind("panic")))
    }

    async fn call_async(&self, job: Job) -> Result<(), HandlerError> {
        let Some(event_loop) = self.event_loop.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err(HandlerError::fatal(
                "an async handler needs an event loop: run the worker with run() or run_async()",
            )
            .with_kind("RuntimeError"));
        };
        let invoke = Arc::clone(&self.invoke);
        let (done, outcome) = oneshot::channel();
        let started = tokio::task::spawn_blocking(move || {
            Python::attach(|py| -> PyResult<Py<PyAny>> {
                let job = PyJob::new(py, job)?;
                let coroutine = invoke.bind(py).call1((job,))?;
                let future = RUN_THREADSAFE
                    .import(py, "asyncio", "run_coroutine_threadsafe")?
                    .call1((coroutine, event_loop.bind(py)))?;
                future.call_method1("add_done_callback", (Completion { done: Mutex::new(Some(done)) },))?;
                Ok(future.unbind())
            })
        })
        .await;
        let future = match started {
            Ok(Ok(future)) => future,
            Ok(Err(e)) => return Err(Python::attach(|py| failure(py, e))),
            Err(e) => return Err(HandlerError::retryable(e.to_string()).with_kind("panic")),
        };
        // Until the coroutine reports, dropping this attempt cancels it.
        let cancel = CancelOnDrop(Some(future));
        let reported = outcome.await;
        drop(cancel.disarm());
        reported.unwrap_or_else(|_| Err(HandlerError::retryable("the coroutine was never awaited").with_kind("error")))
    }
}

static RUN_THREADSAFE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[async_trait]
impl pillarbox::Handler for PyHandler {
    async fn handle(&self, job: Job) -> Result<(), HandlerError> {
        if self.is_async {
            self.call_async(job).await
        } else {
            self.call(job).await
        }
    }
}

/// The outcome the Python invoker reported.
fn outcome(result: &Bound<'_, PyAny>) -> Result<(), HandlerError> {
    if result.is_none() {
        return Ok(());
    }
    let (kind, message, retryable, after): (String, String, bool, Option<f64>) = result.extract().map_err(|e| {
        HandlerError::retryable(format!("the handler's outcome could not be read: {e}")).with_kind("error")
    })?;
    let mut error =
        if retryable { HandlerError::retryable(message) } else { HandlerError::fatal(message) }.with_kind(kind);
    if let Some(after) = after.and_then(|s| Duration::try_from_secs_f64(s).ok()) {
        error = error.with_retry_after(after);
    }
    Err(error)
}

/// An exception that escaped the invoker (one that is not an `Exception`,
/// or a bug): a retryable failure of its class's name.
fn failure(py: Python<'_>, e: PyErr) -> HandlerError {
    let kind = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "error".into());
    HandlerError::retryable(e.value(py).to_string()).with_kind(kind)
}

/// Called by asyncio when the handler's coroutine is done.
#[pyclass(frozen)]
struct Completion {
    done: Mutex<Option<oneshot::Sender<Result<(), HandlerError>>>>,
}

#[pymethods]
impl Completion {
    fn __call__(&self, py: Python<'_>, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let verdict = if future.call_method0("cancelled")?.is_truthy()? {
            Err(HandlerError::retryable("the handler was cancelled").with_kind("CancelledError"))
        } else {
            match future.call_method0("result") {
                Ok(result) => outcome(&result),
                Err(e) => Err(failure(py, e)),
            }
        };
        if let Some(done) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = done.send(verdict);
        }
        Ok(())
    }
}

/// Cancels a running coroutine (its `concurrent.futures.Future`) when dropped.
struct CancelOnDrop(Option<Py<PyAny>>);

impl CancelOnDrop {
    fn disarm(mut self) -> Option<Py<PyAny>> {
        self.0.take()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(future) = self.0.take() {
            // Off the runtime's worker threads: taking the GIL may wait.
            let cancel = move || {
                Python::try_attach(|py| {
                    let _ = future.call_method0(py, "cancel");
                });
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(cancel)),
                Err(_) => cancel(),
            }
        }
    }
}
