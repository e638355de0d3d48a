//! `pillarbox.Message`: payload bytes plus metadata, shared with the core
//! (a message handed to a handler is the core's, not a copy).

use std::collections::BTreeMap;
use std::sync::Arc;

use pillarbox::Message;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};

use crate::convert;

#[pyclass(frozen, name = "Message", module = "pillarbox._native")]
pub struct PyMessage(pub Arc<Message>);

static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The payload parsed as JSON (never pickle, never eval).
pub fn json<'py>(py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    JSON_LOADS.import(py, "json", "loads")?.call1((PyBytes::new(py, payload),))
}

/// The payload as UTF-8 text.
pub fn text(payload: &[u8]) -> PyResult<String> {
    String::from_utf8(payload.to_vec())
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("the payload is not valid UTF-8: {e}")))
}

/// Headers as the core takes them: a mapping of strings to strings. Any
/// other value is refused with `InvalidMessage` naming the header, as in
/// Node and Rust (a number would otherwise reach a consumer as who knows what).
fn string_map(headers: &Bound<'_, PyAny>) -> Result<BTreeMap<String, String>, pillarbox::Error> {
    let invalid = |why: String| pillarbox::Error::InvalidMessage(why);
    let dict = headers
        .cast::<PyDict>()
        .map_err(|_| invalid(format!("headers must be a dict of str to str, not {}", type_name(headers))))?;
    let mut map = BTreeMap::new();
    for (name, value) in dict.iter() {
        let name: String =
            name.extract().map_err(|_| invalid(format!("header names must be str, not {}", type_name(&name))))?;
        let value: String = value
            .extract()
            .map_err(|_| invalid(format!("header `{name}` must be a str, not {}", type_name(&value))))?;
        map.insert(name, value);
    }
    Ok(map)
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// What a schedule's ticks publish: a payload with its key, headers and
/// content type (each tick gets a fresh id and its own idempotency key).
pub fn template(
    payload: &Bound<'_, PyAny>,
    key: Option<&Bound<'_, PyAny>>,
    headers: Option<&Bound<'_, PyAny>>,
    content_type: Option<&Bound<'_, PyAny>>,
) -> PyResult<Message> {
    let mut m = Message::new(convert::payload(payload)?);
    m.key = convert::string(key, "key")?;
    m.content_type = convert::string(content_type, "content_type")?;
    if let Some(headers) = headers.filter(|h| !h.is_none()) {
        m.headers = string_map(headers).map_err(|e| crate::errors::to_pyerr(payload.py(), &e))?;
    }
    Ok(m)
}

#[pymethods]
impl PyMessage {
    #[new]
    #[pyo3(signature = (payload, *, key=None, idempotency_key=None, headers=None, content_type=None, delay=None, deliver_at=None, traceparent=None, tracestate=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        payload: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        idempotency_key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        content_type: Option<&Bound<'_, PyAny>>,
        delay: Option<&Bound<'_, PyAny>>,
        deliver_at: Option<&Bound<'_, PyAny>>,
        traceparent: Option<&Bound<'_, PyAny>>,
        tracestate: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut m = Message::new(convert::payload(payload)?);
        m.key = convert::string(key, "key")?;
        m.idempotency_key = convert::string(idempotency_key, "idempotency_key")?;
        m.content_type = convert::string(content_type, "content_type")?;
        m.traceparent = convert::string(traceparent, "traceparent")?;
        m.tracestate = convert::string(tracestate, "tracestate")?;
        if let Some(headers) = headers {
            m.headers = string_map(headers).map_err(|e| crate::errors::to_pyerr(py, &e))?;
        }
        if let Some(delay) = convert::duration(delay, "delay")? {
            m = m.with_delay(delay);
        }
        if let Some(at) = convert::time(deliver_at, "deliver_at")? {
            m = m.with_deliver_at(at);
        }
        Ok(PyMessage(Arc::new(m)))
    }

    /// Unique, time-ordered id (UUIDv7).
    #[getter]
    fn id(&self) -> &str {
        &self.0.id
    }

    /// The payload bytes.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.payload)
    }

    #[getter]
    fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    #[getter]
    fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }

    #[getter]
    fn content_type(&self) -> Option<&str> {
        self.0.content_type.as_deref()
    }

    /// Application headers (a new dict each time).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.0.headers {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// 1 on first delivery, +1 on each retry or redelivery.
    #[getter]
    fn attempt(&self) -> u32 {
        self.0.attempt
    }

    #[getter]
    fn published_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::datetime(py, self.0.published_at)
    }

    #[getter]
    fn deliver_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        convert::maybe_datetime(py, self.0.deliver_at)
    }

    #[getter]
    fn traceparent(&self) -> Option<&str> {
        self.0.traceparent.as_deref()
    }

    #[getter]
    fn tracestate(&self) -> Option<&str> {
        self.0.tracestate.as_deref()
    }

    /// The schedule that published it, for a scheduled message.
    #[getter]
    fn schedule(&self) -> Option<&str> {
        self.0.schedule.as_deref()
    }

    /// The tick it was published for (an aware UTC `datetime`), for a
    /// scheduled message: when it was meant to run.
    #[getter]
    fn scheduled_for<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        convert::maybe_datetime(py, self.0.scheduled_for)
    }

    /// What went wrong on earlier attempts (`first_failed_at`,
    /// `last_failed_at`, `last_error_kind`, `last_error`), or `None`.
    #[getter]
    fn failures(&self) -> Option<crate::records::PyFailures> {
        self.0.failures.as_ref().map(crate::records::PyFailures::from)
    }

    /// The payload parsed as JSON.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json(py, &self.0.payload)
    }

    /// The payload as UTF-8 text.
    fn text(&self) -> PyResult<String> {
        text(&self.0.payload)
    }

    fn __repr__(&self) -> String {
        format!("<pillarbox.Message {} attempt={} {} bytes>", self.0.id, self.0.attempt, self.0.payload.len())
    }
}
