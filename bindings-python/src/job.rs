//! `pillarbox.Job`: what a handler is given.

use std::sync::Arc;

use pillarbox::Job;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert;
use crate::message::{self, PyMessage};

#[pyclass(frozen, name = "Job", module = "pillarbox._native")]
pub struct PyJob {
    job: Job,
    /// Made once, when the job crosses into Python: the one copy of the payload.
    payload: Py<PyBytes>,
}

impl PyJob {
    pub fn new(py: Python<'_>, job: Job) -> PyResult<Bound<'_, PyJob>> {
        let payload = PyBytes::new(py, &job.message.payload).unbind();
        Bound::new(py, PyJob { job, payload })
    }
}

#[pymethods]
impl PyJob {
    /// The payload bytes.
    #[getter]
    fn payload(&self, py: Python<'_>) -> Py<PyBytes> {
        self.payload.clone_ref(py)
    }

    /// The message, with every metadata field.
    #[getter]
    fn message(&self) -> PyMessage {
        PyMessage(Arc::clone(&self.job.message))
    }

    /// The message id.
    #[getter]
    fn id(&self) -> &str {
        &self.job.message.id
    }

    #[getter]
    fn topic(&self) -> &str {
        &self.job.topic
    }

    #[getter]
    fn group(&self) -> &str {
        &self.job.group
    }

    /// This attempt's number, 1 on first delivery.
    #[getter]
    fn attempt(&self) -> u32 {
        self.job.attempt()
    }

    /// Attempts the retry budget allows in all.
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.job.max_attempts
    }

    /// Whether a failure now dead-letters the message rather than retrying it.
    #[getter]
    fn is_last_attempt(&self) -> bool {
        self.job.is_last_attempt()
    }

    /// When this attempt times out (the worker's `handler_timeout`), or `None`.
    #[getter]
    fn deadline<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        convert::maybe_datetime(py, self.job.deadline)
    }

    /// Whether the worker gave up on this attempt (timeout, or the shutdown
    /// grace ended): a plain-function handler should stop soon; its message
    /// is retried or handed back whatever it does.
    #[getter]
    fn cancelled(&self) -> bool {
        self.job.is_cancelled()
    }

    /// The payload parsed as JSON.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        message::json(py, &self.job.message.payload)
    }

    /// The payload as UTF-8 text.
    fn text(&self) -> PyResult<String> {
        message::text(&self.job.message.payload)
    }

    fn __repr__(&self) -> String {
        format!("<pillarbox.Job {} attempt {}/{}>", self.job.message.id, self.job.attempt(), self.job.max_attempts)
    }
}
