//! The threads plain-function handlers run on: Python threads of their own
//! (their thread state lives as long as they do), each waiting for the next
//! job without the GIL and taking it only to run the handler. A job handed
//! to a thread already running goes on without waking anything.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use pillarbox::{HandlerError, Job};
use pyo3::prelude::*;
use tokio::sync::oneshot;

/// A job and where its outcome goes.
pub struct Task {
    pub job: Job,
    pub done: oneshot::Sender<Result<(), HandlerError>>,
}

/// Runs one task with the GIL held.
pub type Run = fn(Python<'_>, &Py<PyAny>, Job) -> Result<(), HandlerError>;

#[derive(Default)]
struct Queue {
    tasks: VecDeque<Task>,
    /// Threads waiting for a task.
    idle: usize,
    /// Threads woken for a task that have not looked at the queue yet.
    waking: usize,
    /// Threads started.
    started: usize,
    closed: bool,
}

/// Up to `size` threads sharing one queue of tasks.
pub struct Threads {
    queue: Mutex<Queue>,
    ready: Condvar,
    size: usize,
    invoke: Arc<Py<PyAny>>,
    run: Run,
}

impl Threads {
    pub fn new(size: usize, invoke: Arc<Py<PyAny>>, run: Run) -> Arc<Self> {
        Arc::new(Threads { queue: Mutex::default(), ready: Condvar::new(), size: size.max(1), invoke, run })
    }

    /// Queues a task; starts another thread when every one is busy and
    /// there is room for more.
    pub fn submit(self: &Arc<Self>, task: Task) {
        // Wakes an idle thread only for a task no woken thread will take:
        // waking one per task would have them all queue for the GIL.
        let (start, wake) = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.tasks.push_back(task);
            let start = q.idle == 0 && q.started < self.size;
            let wake = !start && q.idle > q.waking && q.tasks.len() > q.waking;
            if start {
                q.started += 1;
            }
            if wake {
                q.waking += 1;
            }
            (start, wake)
        };
        if start {
            self.start_thread();
        } else if wake {
            self.ready.notify_one();
        }
    }

    fn start_thread(self: &Arc<Self>) {
        let serving = Serving(Arc::clone(self));
        let started = Python::attach(|py| -> PyResult<()> {
            let thread = py.import("threading")?.getattr("Thread")?;
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("target", Py::new(py, serving)?.getattr(py, "serve")?)?;
            kwargs.set_item("name", "pillarbox-handler")?;
            kwargs.set_item("daemon", true)?;
            thread.call((), Some(&kwargs))?.call_method0("start")?;
            Ok(())
        });
        if let Err(e) = started {
            tracing::error!(error = %e, "could not start a handler thread");
            self.queue.lock().unwrap_or_else(|e| e.into_inner()).started -= 1;
        }
    }

    /// The next task, waiting (without the GIL) until there is one; `None` once closed.
    fn next(&self) -> Option<Task> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(task) = q.tasks.pop_front() {
                return Some(task);
            }
            if q.closed {
                return None;
            }
            q.idle += 1;
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            q.idle -= 1;
            q.waking = q.waking.saturating_sub(1);
        }
    }

    /// The next task if one is queued.
    fn try_next(&self) -> Option<Task> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).tasks.pop_front()
    }

    /// Lets the threads end once the queue is empty.
    pub fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

/// What a handler thread runs.
#[pyclass(frozen)]
struct Serving(Arc<Threads>);

#[pymethods]
impl Serving {
    fn serve(&self, py: Python<'_>) {
        let threads = &self.0;
        // Waits without the GIL only when there is nothing queued: while
        // jobs keep coming, this thread goes on holding it, and the others
        // (woken for them) get it at the interpreter's switch interval.
        let mut next = py.detach(|| threads.next());
        while let Some(task) = next {
            let outcome = (threads.run)(py, &threads.invoke, task.job);
            let _ = task.done.send(outcome);
            next = threads.try_next().or_else(|| py.detach(|| threads.next()));
        }
        threads.queue.lock().unwrap_or_else(|e| e.into_inner()).started -= 1;
    }
}
