//! Schedules from Python: the broker's calls that keep them (the methods
//! live on `Broker`, in broker.rs, and build on these), the record a
//! listing gives, and the scheduler that publishes their ticks.

use std::sync::Arc;
use std::time::SystemTime;

use pillarbox::schedule::{Misfire, Schedule, Scheduler, Stored, Upserted, When};
use pillarbox::{Broker, Message};
use pyo3::prelude::*;

use crate::broker::PyBroker;
use crate::convert;
use crate::errors::OrRaise;
use crate::operation::Operation;
use crate::runtime::{block_on, runtime};

/// The schedule the options describe: what `Broker.upsert_schedule` checks
/// before anything is stored.
#[allow(clippy::too_many_arguments)]
pub fn schedule_from(
    name: &Bound<'_, PyAny>,
    topic: &Bound<'_, PyAny>,
    message: Message,
    cron: Option<&Bound<'_, PyAny>>,
    every: Option<&Bound<'_, PyAny>>,
    zone: Option<&Bound<'_, PyAny>>,
    start: Option<&Bound<'_, PyAny>>,
    end: Option<&Bound<'_, PyAny>>,
    misfire: Option<&Bound<'_, PyAny>>,
    misfire_cap: Option<&Bound<'_, PyAny>>,
) -> PyResult<Schedule> {
    let py = name.py();
    let name = convert::string(Some(name), "name")?.unwrap_or_default();
    let topic = convert::string(Some(topic), "topic")?.unwrap_or_default();
    let cron = convert::string(cron, "cron")?;
    let zone = convert::string(zone, "zone")?;
    let every = convert::duration(every, "every")?;
    let start = convert::time(start, "start")?;
    let end = convert::time(end, "end")?;
    let misfire_name = convert::string(misfire, "misfire")?;
    let cap = convert::maybe_count(misfire_cap, "misfire_cap", 1, u32::MAX as u64)?.map(|n| n as u32);
    let when = When::from_options(cron.as_deref(), every, zone.as_deref(), start).or_raise(py)?;
    let misfire = match misfire_name {
        Some(name) => Misfire::from_name(&name, cap).or_raise(py)?,
        None if cap.is_some() => Misfire::from_name("all", cap).or_raise(py)?,
        None => Misfire::default(),
    };
    let mut schedule = Schedule::new(&name, when, &topic, &message).or_raise(py)?;
    (schedule.start, schedule.end, schedule.misfire) = (start, end, misfire);
    schedule.check().or_raise(py)?;
    Ok(schedule)
}

/// `created`, `updated` or `unchanged`.
pub fn upserted_name(u: Upserted) -> &'static str {
    match u {
        Upserted::Created => "created",
        Upserted::Updated => "updated",
        Upserted::Unchanged => "unchanged",
    }
}

/// A schedule and its state, as `Broker.schedules()` lists them.
#[pyclass(frozen, name = "ScheduleInfo", module = "pillarbox._native")]
pub struct PyScheduleInfo {
    #[pyo3(get)]
    pub name: String,
    /// Where each tick's message goes.
    #[pyo3(get)]
    pub topic: String,
    /// The cron expression, for a cron schedule.
    #[pyo3(get)]
    pub cron: Option<String>,
    /// Its IANA time zone, for a cron schedule.
    #[pyo3(get)]
    pub zone: Option<String>,
    /// `skip`, `once` or `all`.
    #[pyo3(get)]
    pub misfire: &'static str,
    /// How many missed ticks `all` publishes at most.
    #[pyo3(get)]
    pub misfire_cap: Option<u32>,
    #[pyo3(get)]
    pub paused: bool,
    /// The id of the message the last tick published.
    #[pyo3(get)]
    pub last_message_id: Option<String>,
    every_ms: Option<u64>,
    start: Option<SystemTime>,
    end: Option<SystemTime>,
    last_run: Option<SystemTime>,
    next_run: Option<SystemTime>,
}

impl From<Stored> for PyScheduleInfo {
    fn from(stored: Stored) -> Self {
        let next_run = stored.next_run(SystemTime::now());
        let s = stored.schedule;
        let (cron, zone, every_ms) = match s.when {
            When::Cron { expression, zone } => (Some(expression), Some(zone), None),
            When::Every { every_ms, .. } => (None, None, Some(every_ms)),
        };
        PyScheduleInfo {
            name: s.name,
            topic: s.topic,
            cron,
            zone,
            misfire: s.misfire.name(),
            misfire_cap: match s.misfire {
                Misfire::All { cap } => Some(cap),
                _ => None,
            },
            paused: stored.paused,
            last_message_id: stored.last_message_id,
            every_ms,
            start: s.start,
            end: s.end,
            last_run: stored.last_tick,
            next_run,
        }
    }
}

#[pymethods]
impl PyScheduleInfo {
    /// The interval, for an interval schedule (a `timedelta`).
    #[getter]
    fn every<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.every_ms.map(|ms| convert::timedelta(py, std::time::Duration::from_millis(ms))).transpose()
    }

    /// No tick before this.
    #[getter]
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        convert::maybe_datetime(py, self.start)
    }

    /// No tick after this.
    #[getter]
    fn end<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        convert::maybe_datetime(py, self.end)
    }

    /// The last tick published.
    #[getter]
    fn last_run<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        convert::maybe_datetime(py, self.last_run)
    }

    /// The next tick (none when paused or past its end).
    #[getter]
    fn next_run<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        convert::maybe_datetime(py, self.next_run)
    }

    fn __repr__(&self) -> String {
        let when = match (&self.cron, &self.zone, self.every_ms) {
            (Some(cron), Some(zone), _) => format!("cron={cron:?} zone={zone}"),
            (_, _, Some(ms)) => format!("every={ms}ms"),
            _ => String::new(),
        };
        format!(
            "<ScheduleInfo {} {} topic={}{}>",
            self.name,
            when,
            self.topic,
            if self.paused { " paused" } else { "" }
        )
    }
}

/// Lists the schedules the broker keeps.
pub async fn list(broker: Arc<dyn Broker>) -> pillarbox::Result<Vec<Stored>> {
    let store = broker
        .schedule_store()
        .ok_or(pillarbox::Error::Unsupported { backend: broker.backend(), capability: "schedules" })?;
    store.list().await
}

/// Publishes the due ticks of the broker's schedules, each once however
/// many schedulers run (`pillarbox._native.Scheduler`).
#[pyclass(frozen, name = "Scheduler", module = "pillarbox._native")]
pub struct PyScheduler {
    scheduler: Scheduler,
}

#[pymethods]
impl PyScheduler {
    #[new]
    fn new(py: Python<'_>, broker: &Bound<'_, PyBroker>) -> PyResult<Self> {
        let scheduler = Scheduler::for_broker(broker.get().current(py)?).or_raise(py)?;
        Ok(PyScheduler { scheduler })
    }

    /// Stops `run` after the pass in progress.
    fn shutdown(&self) {
        self.scheduler.shutdown();
    }

    /// Runs until shut down, blocking with the GIL released.
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        let scheduler = self.scheduler.clone();
        let task = runtime().spawn(async move { scheduler.run().await });
        let abort = task.abort_handle();
        match block_on(py, task) {
            Ok(Ok(result)) => result.or_raise(py),
            Ok(Err(e)) => Err(pyo3::exceptions::PyRuntimeError::new_err(format!("the scheduler stopped: {e}"))),
            Err(interrupted) => {
                abort.abort();
                Err(interrupted)
            }
        }
    }

    /// Runs until shut down, awaited on an event loop.
    fn run_async(&self) -> Operation {
        let scheduler = self.scheduler.clone();
        Operation::new(async move { scheduler.run().await })
    }
}
