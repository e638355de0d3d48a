//! A call in progress on the runtime, awaited one of two ways: `wait()`
//! blocks with the GIL released (the blocking API), `schedule(loop,
//! future)` resolves an asyncio future on its loop (the asyncio API). Every
//! broker method returns one, so the two APIs share one implementation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt;

use crate::errors::Raise;
use crate::runtime::{block_on, runtime};

/// Makes the Python value of a result once the GIL is held.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;
type Pending = Pin<Box<dyn Future<Output = Result<Convert, Raise>> + Send>>;

/// A broker call in progress (`pillarbox._native.Operation`).
#[pyclass(frozen, module = "pillarbox._native")]
pub struct Operation {
    pending: Mutex<Option<Pending>>,
}

impl Operation {
    /// An operation whose result converts to Python with `IntoPyObject`.
    pub fn new<F, T, E>(future: F) -> Self
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: for<'py> IntoPyObject<'py> + Send + 'static,
        E: Into<Raise>,
    {
        Self::converting(future, |py, value| value.into_py_any(py))
    }

    /// An operation whose result `convert` turns into Python, with the GIL held.
    pub fn converting<F, T, E>(future: F, convert: fn(Python<'_>, T) -> PyResult<Py<PyAny>>) -> Self
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<Raise>,
    {
        let pending: Pending = Box::pin(async move {
            match future.await {
                Ok(value) => Ok(Box::new(move |py: Python<'_>| convert(py, value)) as Convert),
                Err(e) => Err(e.into()),
            }
        });
        Operation { pending: Mutex::new(Some(pending)) }
    }

    fn take(&self) -> PyResult<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("this operation was already awaited"))
    }
}

static SETTLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[pymethods]
impl Operation {
    /// Blocks until done, with the GIL released; Ctrl-C interrupts it.
    fn wait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match block_on(py, self.take()?)? {
            Ok(convert) => convert(py),
            Err(raise) => Err(raise.into_pyerr(py)),
        }
    }

    /// Runs in the background and settles `future` on `event_loop` when done.
    fn schedule(&self, event_loop: Py<PyAny>, future: Py<PyAny>) -> PyResult<()> {
        let pending = self.take()?;
        runtime().spawn(async move {
            let outcome = pending.await;
            // The GIL is taken off the runtime's threads, which other tasks need.
            let _ = tokio::task::spawn_blocking(move || {
                Python::try_attach(|py| {
                    let (value, error) = match outcome.map(|convert| convert(py)) {
                        Ok(Ok(value)) => (value, py.None()),
                        Ok(Err(e)) => (py.None(), e.into_value(py).into_any()),
                        Err(raise) => (py.None(), raise.into_pyerr(py).into_value(py).into_any()),
                    };
                    let settle = SETTLE.import(py, "pillarbox._bridge", "settle")?;
                    event_loop.call_method1(py, "call_soon_threadsafe", (settle, future, value, error))?;
                    PyResult::Ok(())
                })
            })
            .await;
        });
        Ok(())
    }
}
