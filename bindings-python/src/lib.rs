//! `pillarbox._native`: the Pillarbox core, driven from Python.
//!
//! Thin on purpose: arguments are converted, the core is called, errors are
//! mapped. Retries, dead letters, idempotency, leases and shutdown are the
//! core worker's; the Python facade (`python/pillarbox/`) gives the API its
//! Python shape.

mod bench;
mod broker;
mod cli;
mod conformance;
mod convert;
mod coroutines;
mod errors;
mod handler;
mod job;
mod logging;
mod message;
mod operation;
mod records;
mod runtime;
mod schedules;
mod stats;
mod threads;
mod worker;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ERROR_CODES", pillarbox::Error::CODES.to_vec())?;
    m.add("DEFAULTS", defaults(m.py())?)?;
    m.add("MAX_CONCURRENCY", pillarbox::MAX_CONCURRENCY)?;
    m.add_class::<broker::PyBroker>()?;
    m.add_class::<operation::Operation>()?;
    m.add_class::<message::PyMessage>()?;
    m.add_class::<job::PyJob>()?;
    m.add_class::<worker::PyWorker>()?;
    m.add_class::<stats::PyGroupStats>()?;
    m.add_class::<stats::PyPartitionLag>()?;
    m.add_class::<stats::PyDeadLetter>()?;
    m.add_class::<stats::PyDeadLetterReason>()?;
    m.add_class::<stats::PyWorkerStats>()?;
    m.add_class::<records::PyCapabilities>()?;
    m.add_class::<records::PyFailures>()?;
    m.add_class::<schedules::PyScheduleInfo>()?;
    m.add_class::<schedules::PyScheduler>()?;
    m.add_function(wrap_pyfunction!(broker::connect, m)?)?;
    m.add_function(wrap_pyfunction!(conformance::scenarios, m)?)?;
    m.add_function(wrap_pyfunction!(conformance::run_scenario, m)?)?;
    m.add_function(wrap_pyfunction!(cli::cli, m)?)?;
    m.add_function(wrap_pyfunction!(bench::_bench_publish, m)?)?;
    m.add_function(wrap_pyfunction!(bench::_bench_consume, m)?)?;
    Ok(())
}

/// The core's defaults (`pillarbox::surface`) by call and option, durations
/// in seconds: the package's signatures and Django's settings read them here.
fn defaults(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    use pillarbox::surface::DefaultValue;
    let calls = pyo3::types::PyDict::new(py);
    for (call, options) in pillarbox::surface::defaults() {
        let values = pyo3::types::PyDict::new(py);
        for (name, value) in options {
            match value {
                DefaultValue::Count(n) => values.set_item(name, n)?,
                DefaultValue::Duration(d) => values.set_item(name, d.map(|d| d.as_secs_f64()))?,
                DefaultValue::Number(n) => values.set_item(name, n)?,
                DefaultValue::Text(text) => values.set_item(name, text)?,
                DefaultValue::Unset => values.set_item(name, py.None())?,
            }
        }
        calls.set_item(call, values)?;
    }
    Ok(calls)
}
