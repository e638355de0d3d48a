//! Where async handlers run: an asyncio event loop that takes jobs from a
//! queue. The runtime queues a job and, when the queue was empty, writes a
//! byte to a socket pair the loop watches (`loop.add_reader`): no thread
//! hop and no GIL on the runtime's side, and one wake-up of the loop for
//! every job queued meanwhile. The loop makes a task of each job's coroutine;
//! a job whose attempt the core gives up on (timeout, end of the shutdown
//! grace) has its task cancelled, so the coroutine sees `CancelledError`.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use pillarbox::{HandlerError, Job};
use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::handler::Completion;
use crate::job::PyJob;

/// Where a job's coroutine stands.
enum State {
    Queued,
    Running(Py<PyAny>),
    /// The core gave up on it before the loop took it.
    Abandoned,
}

struct Queued {
    job: Job,
    done: oneshot::Sender<Result<(), HandlerError>>,
    state: Arc<Mutex<State>>,
}

pub struct Coroutines {
    invoke: Arc<Py<PyAny>>,
    queue: Mutex<VecDeque<Queued>>,
    /// The loop's end of the socket pair, and ours.
    wakes: UnixStream,
    wake: UnixStream,
    event_loop: Mutex<Option<Arc<Py<PyAny>>>>,
}

impl Coroutines {
    pub fn new(invoke: Arc<Py<PyAny>>) -> std::io::Result<Arc<Self>> {
        let (wakes, wake) = UnixStream::pair()?;
        wakes.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        Ok(Arc::new(Coroutines { invoke, queue: Mutex::default(), wakes, wake, event_loop: Mutex::new(None) }))
    }

    /// Runs coroutines on `event_loop` from now on.
    pub fn attach(self: &Arc<Self>, py: Python<'_>, event_loop: Py<PyAny>) -> PyResult<()> {
        let fd = self.wakes.as_raw_fd();
        self.detach(py);
        let add_reader = event_loop.getattr(py, "add_reader")?;
        let drain = Py::new(py, Drain(Arc::clone(self)))?;
        event_loop.call_method1(py, "call_soon_threadsafe", (add_reader, fd, drain))?;
        *self.event_loop.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(event_loop));
        Ok(())
    }

    /// Stops watching for jobs on the loop it was attached to (the loop may
    /// be closed already): the loop then holds nothing of this handler.
    pub fn detach(&self, py: Python<'_>) {
        if let Some(event_loop) = self.event_loop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if let Ok(remove) = event_loop.getattr(py, "remove_reader") {
                let _ = event_loop.call_method1(py, "call_soon_threadsafe", (remove, self.wakes.as_raw_fd()));
            }
        }
    }

    /// Runs `job`'s coroutine on the loop and waits for its outcome.
    pub async fn run(self: &Arc<Self>, job: Job) -> Result<(), HandlerError> {
        if self.event_loop.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(HandlerError::fatal(
                "an async handler needs an event loop: run the worker with run() or run_async()",
            )
            .with_kind("RuntimeError"));
        }
        let state = Arc::new(Mutex::new(State::Queued));
        let (done, outcome) = oneshot::channel();
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push_back(Queued { job, done, state: Arc::clone(&state) });
            queue.len() == 1
        };
        if was_empty {
            // Full means a wake-up is pending already.
            let _ = (&self.wake).write(&[1]);
        }
        let give_up = GiveUp { state, coroutines: Arc::clone(self) };
        let reported = outcome.await;
        give_up.disarm();
        reported.unwrap_or_else(|_| Err(HandlerError::retryable("the coroutine was never run").with_kind("error")))
    }
}

/// On the loop: takes every queued job and starts its coroutine as a task.
#[pyclass(frozen)]
struct Drain(Arc<Coroutines>);

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let coroutines = &self.0;
        let mut buf = [0u8; 256];
        while matches!((&coroutines.wakes).read(&mut buf), Ok(n) if n > 0) {}
        let taken: Vec<Queued> = coroutines.queue.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        let Some(event_loop) = coroutines.event_loop.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        for queued in taken {
            let mut state = queued.state.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*state, State::Abandoned) {
                continue;
            }
            let started = (|| -> PyResult<Py<PyAny>> {
                let job = PyJob::new(py, queued.job)?;
                let coroutine = coroutines.invoke.bind(py).call1((job, Completion::new(queued.done)))?;
                event_loop.call_method1(py, "create_task", (coroutine,))
            })();
            match started {
                Ok(task) => *state = State::Running(task),
                Err(e) => tracing::error!(error = %e, "could not start an async handler"),
            }
        }
        Ok(())
    }
}

/// While the core waits for a coroutine: dropped before it reports (the
/// attempt timed out, or the shutdown grace ended), it cancels the task.
struct GiveUp {
    state: Arc<Mutex<State>>,
    coroutines: Arc<Coroutines>,
}

impl GiveUp {
    fn disarm(self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Abandoned;
        std::mem::forget(self);
    }
}

impl Drop for GiveUp {
    fn drop(&mut self) {
        let running = std::mem::replace(&mut *self.state.lock().unwrap_or_else(|e| e.into_inner()), State::Abandoned);
        let State::Running(task) = running else { return };
        let Some(event_loop) = self.coroutines.event_loop.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        // Off the runtime's worker threads: taking the GIL may wait.
        let cancel = move || {
            Python::try_attach(|py| {
                if let Ok(cancel) = task.getattr(py, "cancel") {
                    let _ = event_loop.call_method1(py, "call_soon_threadsafe", (cancel,));
                }
            });
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(cancel)),
            Err(_) => cancel(),
        }
    }
}
