//! Conversions at the border: payloads, durations, times and numbers.
//! A value of the wrong type or out of range is `pillarbox.InvalidOption`
//! naming the option as Python spells it and saying what is allowed, never
//! an `OverflowError` or a conversion `TypeError` of PyO3's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyMemoryView, PyString, PyTuple};

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

/// `InvalidOption` for `name`: what is allowed, and what was given.
pub fn invalid_option(name: &str, allowed: &str, value: Option<&Bound<'_, PyAny>>) -> PyErr {
    let given = value.map(|v| format!(", not {}", describe(v))).unwrap_or_default();
    let error = pillarbox::Error::InvalidOption { name: name.to_string(), reason: format!("{allowed}{given}") };
    Python::attach(|py| crate::errors::to_pyerr(py, &error))
}

/// A value as an error message shows it: its type, and the value itself when short.
fn describe(value: &Bound<'_, PyAny>) -> String {
    let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    match value.repr() {
        Ok(repr) if repr.to_string().len() <= 40 => format!("{type_name} {repr}"),
        _ => type_name,
    }
}

/// A whole number from `min` to `max` (an `int`, not a `bool` nor a `float`).
pub fn count(value: &Bound<'_, PyAny>, name: &str, min: u64, max: u64) -> PyResult<u64> {
    let allowed = || format!("must be a whole number from {min} to {max}");
    if value.is_instance_of::<pyo3::types::PyBool>() || !value.is_instance_of::<pyo3::types::PyInt>() {
        return Err(invalid_option(name, &allowed(), Some(value)));
    }
    match value.extract::<i128>() {
        Ok(n) if n >= min as i128 && n <= max as i128 => Ok(n as u64),
        _ => Err(invalid_option(name, &allowed(), Some(value))),
    }
}

/// An optional [`count`]: `None` is unset.
pub fn maybe_count(value: Option<&Bound<'_, PyAny>>, name: &str, min: u64, max: u64) -> PyResult<Option<u64>> {
    value.filter(|v| !v.is_none()).map(|v| count(v, name, min, max)).transpose()
}

/// A `str`; `None` is unset.
pub fn string(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<String>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    match value.cast::<PyString>() {
        Ok(s) => Ok(Some(
            s.to_cow().map_err(|_| invalid_option(name, "must be a str with no lone surrogates", None))?.into_owned(),
        )),
        Err(_) => Err(invalid_option(name, "must be a str", Some(value))),
    }
}

/// A list (or tuple) of `str`; `None` is unset.
pub fn strings(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Vec<String>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    let allowed = "must be a list of str";
    // A `str` is a sequence of one-letter strings: refuse it rather than
    // filter by each of its letters.
    if value.is_instance_of::<PyString>() || !(value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>()) {
        return Err(invalid_option(name, allowed, Some(value)));
    }
    value
        .try_iter()?
        .map(|item| {
            let item = item?;
            string(Some(&item), name)?.ok_or_else(|| invalid_option(name, allowed, Some(&item)))
        })
        .collect::<PyResult<Vec<String>>>()
        .map(Some)
}

/// A finite number (an `int` or a `float`, not a `bool`); ranges are the core's to check.
pub fn number(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<f64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    let n = if value.is_instance_of::<pyo3::types::PyBool>() { None } else { value.extract::<f64>().ok() };
    match n {
        Some(n) if n.is_finite() => Ok(Some(n)),
        _ => Err(invalid_option(name, "must be a finite number", Some(value))),
    }
}

/// A duration from seconds (int or float) or a `timedelta`.
pub fn duration(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Duration>> {
    let Some(value) = value else { return Ok(None) };
    if value.is_none() {
        return Ok(None);
    }
    let allowed = "must be a non-negative, finite number of seconds or a timedelta";
    let secs: f64 = if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(invalid_option(name, allowed, Some(value)));
    } else if let Ok(s) = value.extract::<f64>() {
        s
    } else if value.is_instance_of::<pyo3::types::PyDelta>() {
        value.call_method0("total_seconds")?.extract()?
    } else {
        return Err(invalid_option(name, allowed, Some(value)));
    };
    seconds(secs, name).map(Some)
}

/// A duration from seconds, in whole microseconds as a `datetime` or
/// `timedelta` has them: the float itself may fall a fraction of one short
/// (a `deliver_at` came back a millisecond early).
pub fn seconds(secs: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        invalid_option(name, &format!("must be a non-negative, finite number of seconds, not {secs}"), None)
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
        .map_err(|_| invalid_option(name, "must be a datetime", Some(value)))?;
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
