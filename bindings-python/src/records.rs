//! A broker's capabilities and a message's failure history, as read-only
//! Python objects with the core's field names (as Node's are, in camelCase).

use std::time::{Duration, SystemTime};

use pyo3::prelude::*;

use crate::convert;

/// What a backend can do (`broker.capabilities`).
#[pyclass(frozen, name = "Capabilities", module = "pillarbox._native")]
pub struct PyCapabilities {
    /// Largest accepted message (payload plus metadata), in bytes.
    #[pyo3(get)]
    pub max_message_bytes: usize,
    /// Messages can be published with a delay or a delivery time.
    #[pyo3(get)]
    pub delayed_delivery: bool,
    /// A group receives messages in publish order (per key where the backend partitions).
    #[pyo3(get)]
    pub ordered_delivery: bool,
    /// A group made after messages were published still receives the ones the backend retains.
    #[pyo3(get)]
    pub replay_for_new_groups: bool,
    /// In-flight messages are held by a renewed lease (else by the connection).
    #[pyo3(get)]
    pub leases: bool,
    /// Each consumer owns partitions of a topic (Kafka).
    #[pyo3(get)]
    pub owned_partitions: bool,
    stats_delay: Duration,
}

impl From<&pillarbox::Capabilities> for PyCapabilities {
    fn from(c: &pillarbox::Capabilities) -> Self {
        PyCapabilities {
            max_message_bytes: c.max_message_bytes,
            delayed_delivery: c.delayed_delivery,
            ordered_delivery: c.ordered_delivery,
            replay_for_new_groups: c.replay_for_new_groups,
            leases: c.leases,
            owned_partitions: c.owned_partitions,
            stats_delay: c.stats_delay,
        }
    }
}

#[pymethods]
impl PyCapabilities {
    /// How stale `inspect` figures may be, as a `timedelta`.
    #[getter]
    fn stats_delay<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::timedelta(py, self.stats_delay)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Capabilities max_message_bytes={} delayed_delivery={} ordered_delivery={} replay_for_new_groups={} leases={} owned_partitions={}>",
            self.max_message_bytes,
            self.delayed_delivery,
            self.ordered_delivery,
            self.replay_for_new_groups,
            self.leases,
            self.owned_partitions
        )
    }
}

/// What went wrong on a message's earlier attempts (`message.failures`).
#[pyclass(frozen, name = "Failures", module = "pillarbox._native")]
pub struct PyFailures {
    first_failed_at: SystemTime,
    last_failed_at: SystemTime,
    /// The kind of the last failure (`Flaky`, `timeout`...).
    #[pyo3(get)]
    pub last_error_kind: String,
    /// The last failure's message.
    #[pyo3(get)]
    pub last_error: String,
}

impl From<&pillarbox::FailureHistory> for PyFailures {
    fn from(f: &pillarbox::FailureHistory) -> Self {
        PyFailures {
            first_failed_at: f.first_failed_at,
            last_failed_at: f.last_failed_at,
            last_error_kind: f.last_error_kind.clone(),
            last_error: f.last_error.clone(),
        }
    }
}

#[pymethods]
impl PyFailures {
    /// When the first attempt failed (an aware UTC `datetime`).
    #[getter]
    fn first_failed_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::datetime(py, self.first_failed_at)
    }

    /// When the last attempt failed.
    #[getter]
    fn last_failed_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::datetime(py, self.last_failed_at)
    }

    fn __repr__(&self) -> String {
        format!("<Failures last_error_kind={:?} last_error={:?}>", self.last_error_kind, self.last_error)
    }
}
