//! The core's `Handler` over a Python callable: the bridge every worker
//! and the conformance suite go through.
//!
//! The Python side (`pillarbox._handlers.invoker`) calls the user's handler
//! and reports an outcome: `None` for success, or `(kind, message,
//! retryable, retry_after)`. Plain functions run on Python threads of the
//! handler's own ([`Threads`]), taking the GIL only for the call; coroutines
//! run on an asyncio loop ([`Coroutines`]), and are cancelled when the core gives up on the
//! attempt (its future dropped on timeout or at the end of the shutdown grace).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pillarbox::{HandlerError, Job};
use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::coroutines::Coroutines;
use crate::job::PyJob;
use crate::threads::{Task, Threads};

pub struct PyHandler {
    runs_on: RunsOn,
}

/// Where the handler runs.
enum RunsOn {
    /// A plain function: on threads of its own.
    Threads(Arc<Threads>),
    /// A coroutine function: on an event loop.
    Coroutines(Arc<Coroutines>),
}

impl PyHandler {
    /// A handler over the Python invoker `invoke`: a coroutine function
    /// when `is_async`, else a plain one run on up to `threads` threads.
    pub fn new(invoke: Py<PyAny>, is_async: bool, threads: usize) -> PyResult<Self> {
        let invoke = Arc::new(invoke);
        let runs_on = if is_async {
            RunsOn::Coroutines(Coroutines::new(invoke)?)
        } else {
            RunsOn::Threads(Threads::new(threads, invoke, call_with_gil))
        };
        Ok(PyHandler { runs_on })
    }

    /// Coroutines stop running on the loop they were given.
    pub fn detach_loop(&self, py: Python<'_>) {
        if let RunsOn::Coroutines(coroutines) = &self.runs_on {
            coroutines.detach(py);
        }
    }

    /// Where coroutines run from now on (nothing to do for plain functions).
    pub fn set_loop(&self, py: Python<'_>, event_loop: Option<Py<PyAny>>) -> PyResult<()> {
        match (&self.runs_on, event_loop) {
            (RunsOn::Coroutines(coroutines), Some(event_loop)) => coroutines.attach(py, event_loop),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl pillarbox::Handler for PyHandler {
    async fn handle(&self, job: Job) -> Result<(), HandlerError> {
        match &self.runs_on {
            RunsOn::Threads(threads) => {
                let (done, outcome) = oneshot::channel();
                threads.submit(Task { job, done });
                outcome
                    .await
                    .unwrap_or_else(|_| Err(HandlerError::retryable("the handler thread stopped").with_kind("error")))
            }
            RunsOn::Coroutines(coroutines) => coroutines.run(job).await,
        }
    }
}

impl Drop for PyHandler {
    fn drop(&mut self) {
        if let RunsOn::Threads(threads) = &self.runs_on {
            threads.close();
        }
    }
}

/// Runs a plain-function invoker on a job (on a handler thread, GIL held).
fn call_with_gil(py: Python<'_>, invoke: &Py<PyAny>, job: Job) -> Result<(), HandlerError> {
    let job = PyJob::new(py, job).map_err(|e| failure(py, e))?;
    let result = invoke.bind(py).call1((job,)).map_err(|e| failure(py, e))?;
    outcome(&result)
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

/// Handed to an async handler's invoker: called with the outcome once the
/// coroutine is done.
#[pyclass(frozen)]
pub struct Completion {
    done: Mutex<Option<oneshot::Sender<Result<(), HandlerError>>>>,
}

impl Completion {
    pub fn new(done: oneshot::Sender<Result<(), HandlerError>>) -> Self {
        Completion { done: Mutex::new(Some(done)) }
    }
}

#[pymethods]
impl Completion {
    fn __call__(&self, reported: &Bound<'_, PyAny>) {
        if let Some(done) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = done.send(outcome(reported));
        }
    }
}
