//! Inspection figures, dead letters and worker counters, as read-only Python objects.

use std::time::{Duration, SystemTime};

use pyo3::prelude::*;

use crate::convert;
use crate::message::PyMessage;

/// A group's figures, from the broker.
#[pyclass(frozen, name = "GroupStats", module = "pillarbox._native")]
pub struct PyGroupStats {
    #[pyo3(get)]
    pub topic: String,
    #[pyo3(get)]
    pub group: String,
    /// Ready to be received now (the depth; on Kafka, the lag).
    #[pyo3(get)]
    pub ready: u64,
    /// Received and not yet settled; `None` when the broker could not tell
    /// (RabbitMQ without its management plugin).
    #[pyo3(get)]
    pub in_flight: Option<u64>,
    /// Delayed publishes and retries waiting for their time.
    #[pyo3(get)]
    pub waiting: u64,
    #[pyo3(get)]
    pub dead_letters: u64,
    /// Per partition, where the backend has partitions.
    #[pyo3(get)]
    pub partitions: Vec<PyPartitionLag>,
    oldest_age: Option<Duration>,
}

impl From<pillarbox::GroupStats> for PyGroupStats {
    fn from(s: pillarbox::GroupStats) -> Self {
        PyGroupStats {
            topic: s.topic,
            group: s.group,
            ready: s.ready,
            in_flight: s.in_flight,
            waiting: s.waiting,
            dead_letters: s.dead_letters,
            partitions: s.partitions.into_iter().map(PyPartitionLag::from).collect(),
            oldest_age: s.oldest_age,
        }
    }
}

#[pymethods]
impl PyGroupStats {
    /// Age of the oldest message not yet done, as a `timedelta`, or `None`.
    #[getter]
    fn oldest_age<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.oldest_age.map(|d| convert::timedelta(py, d)).transpose()
    }

    fn __repr__(&self) -> String {
        format!(
            "<GroupStats {}/{} ready={} in_flight={} waiting={} dead_letters={}>",
            self.topic,
            self.group,
            self.ready,
            self.in_flight.map_or("None".to_string(), |n| n.to_string()),
            self.waiting,
            self.dead_letters
        )
    }
}

/// Lag of one partition.
#[pyclass(frozen, name = "PartitionLag", module = "pillarbox._native")]
#[derive(Clone)]
pub struct PyPartitionLag {
    #[pyo3(get)]
    pub partition: i32,
    /// The group's committed offset, if any.
    #[pyo3(get)]
    pub committed: Option<i64>,
    /// Log end offset.
    #[pyo3(get)]
    pub end: i64,
    #[pyo3(get)]
    pub lag: i64,
}

impl From<pillarbox::PartitionLag> for PyPartitionLag {
    fn from(p: pillarbox::PartitionLag) -> Self {
        PyPartitionLag { partition: p.partition, committed: p.committed, end: p.end, lag: p.lag }
    }
}

/// Why a message was dead-lettered.
#[pyclass(frozen, name = "DeadLetterReason", module = "pillarbox._native")]
pub struct PyDeadLetterReason {
    #[pyo3(get)]
    pub topic: String,
    #[pyo3(get)]
    pub group: String,
    #[pyo3(get)]
    pub attempts: u32,
    /// `retries_exhausted`, `not_retryable`, `malformed` or `redelivery_limit`.
    #[pyo3(get)]
    pub cause: String,
    #[pyo3(get)]
    pub error_kind: String,
    #[pyo3(get)]
    pub error_message: String,
    first_failed_at: SystemTime,
    last_failed_at: SystemTime,
}

#[pymethods]
impl PyDeadLetterReason {
    #[getter]
    fn first_failed_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::datetime(py, self.first_failed_at)
    }

    #[getter]
    fn last_failed_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::datetime(py, self.last_failed_at)
    }

    fn __repr__(&self) -> String {
        format!(
            "<DeadLetterReason {} after {} attempt(s): {}: {}>",
            self.cause, self.attempts, self.error_kind, self.error_message
        )
    }
}

/// A message in a group's dead letters.
#[pyclass(frozen, name = "DeadLetter", module = "pillarbox._native")]
pub struct PyDeadLetter {
    /// Backend id of the dead letter (not the message id), for redrive and purge.
    #[pyo3(get)]
    id: String,
    message: Py<PyMessage>,
    reason: Py<PyDeadLetterReason>,
}

impl PyDeadLetter {
    pub fn new(py: Python<'_>, d: pillarbox::DeadLetter) -> PyResult<Self> {
        let r = d.reason;
        let reason = PyDeadLetterReason {
            topic: r.topic,
            group: r.group,
            attempts: r.attempts,
            cause: r.cause,
            error_kind: r.error_kind,
            error_message: r.error_message,
            first_failed_at: r.first_failed_at,
            last_failed_at: r.last_failed_at,
        };
        Ok(PyDeadLetter {
            id: d.id,
            message: Py::new(py, PyMessage(std::sync::Arc::new(d.message)))?,
            reason: Py::new(py, reason)?,
        })
    }
}

#[pymethods]
impl PyDeadLetter {
    /// The message as it was on its last attempt.
    #[getter]
    fn message(&self, py: Python<'_>) -> Py<PyMessage> {
        self.message.clone_ref(py)
    }

    /// Why it is here.
    #[getter]
    fn reason(&self, py: Python<'_>) -> Py<PyDeadLetterReason> {
        self.reason.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let r = self.reason.get();
        format!("<DeadLetter {} of message {}: {}>", self.id, self.message.bind(py).get().0.id, r.cause)
    }
}

/// What a worker has done since it was created.
#[pyclass(frozen, name = "WorkerStats", module = "pillarbox._native")]
pub struct PyWorkerStats {
    #[pyo3(get)]
    pub received: u64,
    #[pyo3(get)]
    pub succeeded: u64,
    #[pyo3(get)]
    pub retried: u64,
    #[pyo3(get)]
    pub dead_lettered: u64,
    /// Duplicates acked without running the handler (idempotency key done).
    #[pyo3(get)]
    pub duplicates: u64,
    /// Put back for later because another consumer held their idempotency key.
    #[pyo3(get)]
    pub deferred: u64,
    /// Handed back unstarted or unfinished at shutdown.
    #[pyo3(get)]
    pub released: u64,
    /// Settlements the broker refused (the message will come back).
    #[pyo3(get)]
    pub settle_errors: u64,
    /// Taken back by the broker while their handler ran (an expired lease,
    /// RabbitMQ's consumer timeout): not recorded, delivered again.
    #[pyo3(get)]
    pub lost: u64,
}

impl From<pillarbox::WorkerStats> for PyWorkerStats {
    fn from(s: pillarbox::WorkerStats) -> Self {
        PyWorkerStats {
            received: s.received,
            succeeded: s.succeeded,
            retried: s.retried,
            dead_lettered: s.dead_lettered,
            duplicates: s.duplicates,
            deferred: s.deferred,
            released: s.released,
            settle_errors: s.settle_errors,
            lost: s.lost,
        }
    }
}

#[pymethods]
impl PyWorkerStats {
    fn __repr__(&self) -> String {
        format!(
            "<WorkerStats received={} succeeded={} retried={} dead_lettered={} duplicates={} deferred={} released={} settle_errors={} lost={}>",
            self.received,
            self.succeeded,
            self.retried,
            self.dead_lettered,
            self.duplicates,
            self.deferred,
            self.released,
            self.settle_errors,
            self.lost
        )
    }
}
