//! The core's `Handler` over JavaScript: the bridge every worker and the
//! conformance suite go through.
//!
//! Jobs cross to the event loop in batches, as the Python package's
//! coroutines do: the core's handler calls queue their job and wake the
//! loop once (a weak threadsafe function: it never keeps Node alive); the
//! facade (`index.js`) then takes every queued job in one call, runs the
//! handlers, and reports each outcome with one synchronous call. A call and
//! a Promise per job across the boundary cost about four times as much.
//!
//! When the core gives up on an attempt (timeout, end of the shutdown grace)
//! its future is dropped here, and the facade is told to abort that job's
//! `AbortSignal`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use napi::bindgen_prelude::{Array, BufferSlice, Null, Object};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use pillarbox::message::to_millis;
use pillarbox::{HandlerError, Job, Message};
use tokio::sync::oneshot;

use crate::message::Failures;

/// A job on its way to JavaScript.
struct QueuedJob {
    id: u32,
    attempt: u32,
    max_attempts: u32,
    deadline: Option<f64>,
    topic: Arc<str>,
    group: Arc<str>,
    message: Arc<Message>,
    script: Option<String>,
}

/// How many values a job takes in the array `take` returns, and their
/// order (the facade, `index.js`, reads them by these positions).
pub const FIELDS: u32 = 19;

impl QueuedJob {
    /// Writes the job at `at`: values by position, no property names, which
    /// would cost a string per field per job.
    fn write(&self, env: &Env, row: &mut Array, at: u32) -> napi::Result<()> {
        let m = &self.message;
        let ms = |t: SystemTime| to_millis(t) as f64;
        row.set(at, self.id)?;
        row.set(at + 1, self.attempt)?;
        row.set(at + 2, self.max_attempts)?;
        row.set(at + 3, self.deadline)?;
        // A copy into memory V8 owns: no finalizer per payload.
        row.set(at + 4, BufferSlice::copy_from(env, &m.payload[..])?)?;
        row.set(at + 5, m.id.as_str())?;
        row.set(at + 6, &*self.topic)?;
        row.set(at + 7, &*self.group)?;
        row.set(at + 8, m.key.as_deref())?;
        row.set(at + 9, m.idempotency_key.as_deref())?;
        row.set(at + 10, m.content_type.as_deref())?;
        if m.headers.is_empty() {
            row.set(at + 11, Null)?;
        } else {
            let mut headers = Object::new(env)?;
            for (k, v) in &m.headers {
                headers.set(k, v.as_str())?;
            }
            row.set(at + 11, headers)?;
        }
        row.set(at + 12, m.attempt)?;
        row.set(at + 13, ms(m.published_at))?;
        row.set(at + 14, m.deliver_at.map(ms))?;
        row.set(at + 15, m.traceparent.as_deref())?;
        row.set(at + 16, m.tracestate.as_deref())?;
        row.set(
            at + 17,
            m.failures.as_ref().map(|f| Failures {
                first_failed_at: ms(f.first_failed_at),
                last_failed_at: ms(f.last_failed_at),
                last_error_kind: f.last_error_kind.clone(),
                last_error: f.last_error.clone(),
            }),
        )?;
        row.set(at + 18, self.script.as_deref())?;
        Ok(())
    }
}

/// What the handler did, when it failed.
#[napi(object)]
pub struct Outcome {
    pub kind: String,
    pub message: String,
    pub retryable: bool,
    pub retry_after_ms: Option<f64>,
}

/// `() => void`: jobs are waiting in the dispatcher. Weak.
pub type JsWake = ThreadsafeFunction<(), (), (), Status, false, true>;
/// `(id) => void`: abort that job's signal. Weak.
pub type JsCancel = ThreadsafeFunction<u32, (), u32, Status, false, true>;

type Reply = oneshot::Sender<Option<Outcome>>;

struct Shared {
    wake: JsWake,
    cancel: JsCancel,
    /// Jobs not yet taken by JavaScript, each with where its outcome goes.
    queued: Mutex<Vec<(QueuedJob, Reply)>>,
    /// Jobs JavaScript has taken and not yet completed.
    running: Mutex<HashMap<u32, Reply>>,
    /// Whether a wake-up is on its way (one per batch, not one per job).
    woken: AtomicBool,
    next_id: AtomicU32,
}

/// The JavaScript end: the facade takes jobs from it and completes them.
#[napi]
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

#[napi]
impl Dispatcher {
    #[napi(constructor)]
    pub fn new(wake: JsWake, cancel: JsCancel) -> Self {
        let shared = Shared {
            wake,
            cancel,
            queued: Mutex::new(Vec::new()),
            running: Mutex::new(HashMap::new()),
            woken: AtomicBool::new(false),
            next_id: AtomicU32::new(1),
        };
        Dispatcher { shared: Arc::new(shared) }
    }

    /// Every job queued since the last call, `FIELDS` values each.
    #[napi]
    pub fn take<'env>(&self, env: &'env Env) -> napi::Result<Array<'env>> {
        // Cleared first: a job queued from now on wakes the loop again.
        self.shared.woken.store(false, Ordering::SeqCst);
        let queued = std::mem::take(&mut *self.shared.queued.lock().unwrap());
        // A job whose attempt was given up while queued is not run.
        let live: Vec<_> = queued.into_iter().filter(|(_, reply)| !reply.is_closed()).collect();
        let mut rows = env.create_array(live.len() as u32 * FIELDS)?;
        let mut running = self.shared.running.lock().unwrap();
        for (n, (job, reply)) in live.into_iter().enumerate() {
            job.write(env, &mut rows, n as u32 * FIELDS)?;
            running.insert(job.id, reply);
        }
        Ok(rows)
    }

    /// The handlers of these jobs succeeded.
    #[napi]
    pub fn succeed(&self, ids: Vec<u32>) {
        let mut running = self.shared.running.lock().unwrap();
        for id in ids {
            if let Some(reply) = running.remove(&id) {
                let _ = reply.send(None);
            }
        }
    }

    /// The handler of job `id` finished: `null` for success, or how it failed.
    #[napi]
    pub fn complete(&self, id: u32, outcome: Option<Outcome>) {
        if let Some(reply) = self.shared.running.lock().unwrap().remove(&id) {
            let _ = reply.send(outcome);
        }
    }

    /// A handler for the core: the same dispatcher can serve several.
    pub fn handler(&self, script: Option<String>) -> NodeHandler {
        NodeHandler { shared: Arc::clone(&self.shared), script }
    }
}

pub struct NodeHandler {
    shared: Arc<Shared>,
    script: Option<String>,
}

#[async_trait]
impl pillarbox::Handler for NodeHandler {
    async fn handle(&self, job: Job) -> Result<(), HandlerError> {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let data = QueuedJob {
            id,
            attempt: job.attempt(),
            max_attempts: job.max_attempts,
            deadline: job.deadline.and_then(|d| d.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64() * 1000.0),
            topic: Arc::clone(&job.topic),
            group: Arc::clone(&job.group),
            message: Arc::clone(&job.message),
            script: self.script.clone(),
        };
        let (reply, outcome) = oneshot::channel();
        shared.queued.lock().unwrap().push((data, reply));
        let abort = AbortOnDrop { id: Some(id), shared: Arc::clone(shared) };
        if !shared.woken.swap(true, Ordering::SeqCst) {
            let status = shared.wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
            if status != Status::Ok {
                // Node is shutting down: nothing will run the job.
                shared.woken.store(false, Ordering::SeqCst);
                return Err(
                    HandlerError::retryable(format!("the JavaScript event loop is gone ({status})")).with_kind("Error")
                );
            }
        }
        let outcome = outcome
            .await
            .map_err(|_| HandlerError::retryable("the JavaScript handler was dropped unfinished").with_kind("Error"))?;
        abort.disarm();
        match outcome {
            None => Ok(()),
            Some(o) => {
                let error =
                    if o.retryable { HandlerError::retryable(o.message) } else { HandlerError::fatal(o.message) };
                let mut error = error.with_kind(o.kind);
                if let Some(after) = o.retry_after_ms.and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok()) {
                    error = error.with_retry_after(after);
                }
                Err(error)
            }
        }
    }
}

/// While the core waits for a job: dropped before it completes, it forgets
/// the job and aborts its signal.
struct AbortOnDrop {
    id: Option<u32>,
    shared: Arc<Shared>,
}

impl AbortOnDrop {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            if self.shared.running.lock().unwrap().remove(&id).is_some() {
                let _ = self.shared.cancel.call(id, ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }
}
