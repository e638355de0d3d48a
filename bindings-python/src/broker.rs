//! `pillarbox._native.Broker`: a connection, with every call an
//! [`Operation`] (blocking or asyncio, chosen by the Python facade).

use std::sync::{Arc, Mutex};

use pillarbox::dead_letter::{self, DeadLetterFilter, RedriveOptions};
use pillarbox::schedule::Scheduler;
use pillarbox::{Broker, Message};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::convert;
use crate::errors::OrRaise;
use crate::message::PyMessage;
use crate::operation::Operation;
use crate::runtime::block_on;
use crate::stats::{PyDeadLetter, PyGroupStats};

/// Connects to the broker `url` names.
#[pyfunction]
pub fn connect(url: String) -> Operation {
    Operation::new(async move {
        let broker = pillarbox::connect(&url).await?;
        Ok::<_, pillarbox::Error>(PyBroker::new(url, broker))
    })
}

/// The connection of this process: after `fork()` the child makes its own
/// (the parent's sockets and runtime threads are not its to use).
struct Connection {
    pid: u32,
    broker: Arc<dyn Broker>,
}

#[derive(Clone)]
struct Shared {
    /// The URL as given, kept to reconnect after a fork; never shown.
    url: Arc<str>,
    connection: Arc<Mutex<Connection>>,
}

impl Shared {
    async fn get(&self) -> pillarbox::Result<Arc<dyn Broker>> {
        let pid = std::process::id();
        {
            let c = self.connection.lock().unwrap_or_else(|e| e.into_inner());
            if c.pid == pid {
                return Ok(Arc::clone(&c.broker));
            }
        }
        let fresh = pillarbox::connect(&self.url).await?;
        let mut c = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if c.pid != pid {
            // The parent's connection is leaked, not closed: closing would
            // talk over sockets the parent still uses.
            std::mem::forget(std::mem::replace(&mut c.broker, fresh));
            c.pid = pid;
        }
        Ok(Arc::clone(&c.broker))
    }
}

#[pyclass(frozen, name = "Broker", module = "pillarbox._native")]
pub struct PyBroker {
    shared: Shared,
    backend: &'static str,
    redacted: String,
    capabilities: pillarbox::Capabilities,
}

impl PyBroker {
    fn new(url: String, broker: Arc<dyn Broker>) -> Self {
        PyBroker {
            backend: broker.backend(),
            redacted: pillarbox::url::redact(&url),
            capabilities: broker.capabilities(),
            shared: Shared {
                url: url.into(),
                connection: Arc::new(Mutex::new(Connection { pid: std::process::id(), broker })),
            },
        }
    }

    /// This process's connection, reconnecting after a fork.
    pub fn current(&self, py: Python<'_>) -> PyResult<Arc<dyn Broker>> {
        block_on(py, self.shared.get())?.or_raise(py)
    }

    /// Runs `call` on this process's connection.
    fn call<T, F, Fut>(&self, call: F) -> impl std::future::Future<Output = pillarbox::Result<T>> + Send + 'static
    where
        F: FnOnce(Arc<dyn Broker>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = pillarbox::Result<T>> + Send,
    {
        let shared = self.shared.clone();
        async move { call(shared.get().await?).await }
    }
}

/// The backend's schedule store, or `UNSUPPORTED`.
fn store_of(b: &Arc<dyn Broker>) -> pillarbox::Result<Arc<dyn pillarbox::schedule::ScheduleStore>> {
    b.schedule_store().ok_or(pillarbox::Error::Unsupported { backend: b.backend(), capability: "schedules" })
}

#[allow(clippy::too_many_arguments)]
fn filter(
    error_kind: Option<&Bound<'_, PyAny>>,
    cause: Option<&Bound<'_, PyAny>>,
    error_contains: Option<&Bound<'_, PyAny>>,
    failed_before: Option<&Bound<'_, PyAny>>,
    message_ids: Option<&Bound<'_, PyAny>>,
) -> PyResult<DeadLetterFilter> {
    Ok(DeadLetterFilter {
        error_kind: convert::string(error_kind, "error_kind")?,
        cause: convert::string(cause, "cause")?,
        error_contains: convert::string(error_contains, "error_contains")?,
        failed_before: convert::time(failed_before, "failed_before")?,
        message_ids: convert::strings(message_ids, "message_ids")?,
    })
}

#[pymethods]
impl PyBroker {
    #[getter]
    fn backend(&self) -> &'static str {
        self.backend
    }

    /// The URL with its credentials redacted.
    #[getter]
    fn url(&self) -> &str {
        &self.redacted
    }

    #[getter]
    fn capabilities(&self) -> crate::records::PyCapabilities {
        crate::records::PyCapabilities::from(&self.capabilities)
    }

    fn ensure_group(&self, topic: String, group: String) -> Operation {
        Operation::new(self.call(move |b| async move { b.ensure_group(&topic, &group).await }))
    }

    /// Publishes a batch of messages or bare payloads; resolves to the
    /// message ids. A payload becomes a message here, with no Python object
    /// made for it.
    fn publish(&self, topic: String, messages: Vec<Bound<'_, PyAny>>) -> PyResult<Operation> {
        let batch = messages
            .iter()
            .map(|m| match m.cast::<PyMessage>() {
                Ok(message) => Ok(Message::clone(&message.get().0)),
                Err(_) => convert::payload(m).map(Message::new),
            })
            .collect::<PyResult<Vec<Message>>>()?;
        let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
        Ok(Operation::new(self.call(move |b| async move { b.publish(&topic, batch).await.map(|()| ids) })))
    }

    /// Publishes one message or bare payload; resolves to its id (no list
    /// made for the one-at-a-time call).
    fn publish_one(&self, topic: String, message: Bound<'_, PyAny>) -> PyResult<Operation> {
        let message = match message.cast::<PyMessage>() {
            Ok(message) => Message::clone(&message.get().0),
            Err(_) => convert::payload(&message).map(Message::new)?,
        };
        let id = message.id.clone();
        Ok(Operation::new(self.call(move |b| async move { b.publish(&topic, vec![message]).await.map(|()| id) })))
    }

    fn inspect(&self, topic: String, group: String) -> Operation {
        Operation::new(self.call(move |b| async move { b.inspect(&topic, &group).await.map(PyGroupStats::from) }))
    }

    fn groups(&self, topic: String) -> Operation {
        Operation::new(self.call(move |b| async move { b.groups(&topic).await }))
    }

    #[pyo3(signature = (topic, group, after=None, limit=None))]
    fn dead_letters(
        &self,
        topic: String,
        group: String,
        after: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Operation> {
        let after = convert::string(after, "after")?;
        let limit = convert::maybe_count(limit, "limit", 1, u32::MAX as u64)?
            .map_or(pillarbox::dead_letter::DEAD_LETTER_PAGE, |n| n as usize);
        Ok(Operation::converting(
            self.call(move |b| async move { b.list_dead_letters(&topic, &group, after.as_deref(), limit).await }),
            |py, found| {
                let found: PyResult<Vec<PyDeadLetter>> = found.into_iter().map(|d| PyDeadLetter::new(py, d)).collect();
                found?.into_py_any(py)
            },
        ))
    }

    #[pyo3(signature = (topic, group, *, error_kind=None, cause=None, error_contains=None, failed_before=None, message_ids=None, per_second=None, limit=None))]
    #[allow(clippy::too_many_arguments)]
    fn redrive(
        &self,
        topic: String,
        group: String,
        error_kind: Option<&Bound<'_, PyAny>>,
        cause: Option<&Bound<'_, PyAny>>,
        error_contains: Option<&Bound<'_, PyAny>>,
        failed_before: Option<&Bound<'_, PyAny>>,
        message_ids: Option<&Bound<'_, PyAny>>,
        per_second: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Operation> {
        let options = RedriveOptions {
            filter: filter(error_kind, cause, error_contains, failed_before, message_ids)?,
            per_second: convert::number(per_second, "per_second")?,
            limit: convert::maybe_count(limit, "limit", 0, u64::MAX)?.map(|n| n as usize),
        };
        Ok(Operation::new(
            self.call(move |b| async move { dead_letter::redrive(b.as_ref(), &topic, &group, &options).await }),
        ))
    }

    #[pyo3(signature = (topic, group, *, error_kind=None, cause=None, error_contains=None, failed_before=None, message_ids=None))]
    #[allow(clippy::too_many_arguments)]
    fn purge(
        &self,
        topic: String,
        group: String,
        error_kind: Option<&Bound<'_, PyAny>>,
        cause: Option<&Bound<'_, PyAny>>,
        error_contains: Option<&Bound<'_, PyAny>>,
        failed_before: Option<&Bound<'_, PyAny>>,
        message_ids: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Operation> {
        let filter = filter(error_kind, cause, error_contains, failed_before, message_ids)?;
        Ok(Operation::new(
            self.call(move |b| async move { dead_letter::purge(b.as_ref(), &topic, &group, &filter).await }),
        ))
    }

    /// Creates or replaces the schedule `name`; resolves to `created`,
    /// `updated` or `unchanged`.
    #[pyo3(signature = (name, topic, payload, *, cron=None, every=None, zone=None, start=None, end=None, misfire=None, misfire_cap=None, key=None, headers=None, content_type=None))]
    #[allow(clippy::too_many_arguments)]
    fn upsert_schedule(
        &self,
        name: &Bound<'_, PyAny>,
        topic: &Bound<'_, PyAny>,
        payload: &Bound<'_, PyAny>,
        cron: Option<&Bound<'_, PyAny>>,
        every: Option<&Bound<'_, PyAny>>,
        zone: Option<&Bound<'_, PyAny>>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        misfire: Option<&Bound<'_, PyAny>>,
        misfire_cap: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        content_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Operation> {
        let message = crate::message::template(payload, key, headers, content_type)?;
        let schedule =
            crate::schedules::schedule_from(name, topic, message, cron, every, zone, start, end, misfire, misfire_cap)?;
        Ok(Operation::new(self.call(move |b| async move {
            let store = b
                .schedule_store()
                .ok_or(pillarbox::Error::Unsupported { backend: b.backend(), capability: "schedules" })?;
            store.upsert(&schedule).await.map(crate::schedules::upserted_name)
        })))
    }

    /// The schedules this broker keeps, with their state.
    fn schedules(&self) -> Operation {
        Operation::converting(self.call(crate::schedules::list), |py, found| {
            let found: Vec<crate::schedules::PyScheduleInfo> = found.into_iter().map(Into::into).collect();
            found.into_py_any(py)
        })
    }

    /// Pauses the schedule; resolves to whether it exists.
    fn pause_schedule(&self, name: String) -> Operation {
        Operation::new(self.call(move |b| async move { store_of(&b)?.set_paused(&name, true).await }))
    }

    /// Resumes it (ticks missed while paused are not published).
    fn resume_schedule(&self, name: String) -> Operation {
        Operation::new(self.call(move |b| async move { store_of(&b)?.set_paused(&name, false).await }))
    }

    /// Publishes its message now; resolves to the message id, None if
    /// there is no such schedule.
    fn run_schedule_now(&self, name: String) -> Operation {
        Operation::new(self.call(move |b| async move { Scheduler::run_now(b.as_ref(), &name).await }))
    }

    /// Removes it; resolves to whether it existed.
    fn remove_schedule(&self, name: String) -> Operation {
        Operation::new(self.call(move |b| async move { store_of(&b)?.remove(&name).await }))
    }

    fn close(&self) -> Operation {
        Operation::new(self.call(|b| async move { b.close().await }))
    }

    fn __repr__(&self) -> String {
        format!("<pillarbox._native.Broker {}>", self.redacted)
    }
}
