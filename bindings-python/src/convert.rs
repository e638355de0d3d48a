//! Conversions at the border: payloads, durations and times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyMemoryView, PyString};

/// A payload from `bytes`, `str` (UTF-8), or a buffer (`bytearray`, `memoryview`...):
/// the one copy into the core.
pub fn payload(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Bytes::from(s.to_cow()?.into_owned()));
    }
    // Only what has the buffer protocol (bytearray, memoryview, array...):
    // `bytes(42)` would make 42 zero bytes of an int passed by mistake.
    let view = value.py().get_type::<PyMemoryView>().call1((value,)).map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "a payload must be bytes, str or a buffer, not {}",
            value.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    let copied = view.call_method0("tobytes")?;
    Ok(Bytes::copy_from_slice(copied.cast::<PyBytes>()?.as_bytes()))
}

/// A duration from seconds (int or float) or a `timedelta`.
pub fn duration(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Duration>> {
    let Some(value) = value else { return Ok(None) };
    if value.is_none() {
        return Ok(None);
    }
    let secs: f64 = match value.extract::<f64>() {
        Ok(s) => s,
        Err(_) => value
            .call_method0("total_seconds")
            .and_then(|s| s.extract())
            .map_err(|_| pyo3::exceptions::PyTypeError::new_err(format!("{name} must be seconds or a timedelta")))?,
    };
    seconds(secs, name).map(Some)
}

/// A duration from seconds, in whole microseconds as a `datetime` or
/// `timedelta` has them: the float itself may fall a fraction of one short
/// (a `deliver_at` came back a millisecond early).
pub fn seconds(secs: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!("{name} must be a non-negative number of seconds"))
    })?;
    Ok(Duration::from_micros((secs * 1e6).round() as u64))
}

/// A point in time from a `datetime` (naive ones are local time).
pub fn time(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<SystemTime>> {
    let Some(value) = value else { return Ok(None) };
    if value.is_none() {
        return Ok(None);
    }
    let epoch: f64 = value
        .call_method0("timestamp")
        .and_then(|t| t.extract())
        .map_err(|_| pyo3::exceptions::PyTypeError::new_err(format!("{name} must be a datetime")))?;
    Ok(Some(if epoch >= 0.0 { UNIX_EPOCH + seconds(epoch, name)? } else { UNIX_EPOCH }))
}

static UTC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TIMEDELTA: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `t` as an aware UTC `datetime`.
pub fn datetime<'py>(py: Python<'py>, t: SystemTime) -> PyResult<Bound<'py, PyAny>> {
    let epoch = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    UTC.import(py, "pillarbox._durations", "utc")?.call1((epoch,))
}

/// An optional time as an optional `datetime`.
pub fn maybe_datetime<'py>(py: Python<'py>, t: Option<SystemTime>) -> PyResult<Option<Bound<'py, PyAny>>> {
    t.map(|t| datetime(py, t)).transpose()
}

/// `d` as a `timedelta`.
pub fn timedelta<'py>(py: Python<'py>, d: Duration) -> PyResult<Bound<'py, PyAny>> {
    TIMEDELTA.import(py, "datetime", "timedelta")?.call1((0, d.as_secs_f64()))
}
