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
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use pillarbox::{HandlerError, Job};
use tokio::sync::oneshot;

use crate::message::MessageData;

/// What the JavaScript side is given for each job.
#[napi(object)]
pub struct JobData {
    /// Names the job to `complete` and to the cancel function.
    pub id: u32,
    pub topic: String,
    pub group: String,
    pub attempt: u32,
    pub max_attempts: u32,
    /// When the attempt times out (milliseconds since the epoch), if it can.
    pub deadline: Option<f64>,
    pub message: MessageData,
    /// For the conformance suite: the script the handler acts out (JSON).
    pub script: Option<String>,
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
    queued: Mutex<Vec<(JobData, Reply)>>,
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

    /// Every job queued since the last call.
    #[napi]
    pub fn take(&self) -> Vec<JobData> {
        // Cleared first: a job queued from now on wakes the loop again.
        self.shared.woken.store(false, Ordering::SeqCst);
        let queued = std::mem::take(&mut *self.shared.queued.lock().unwrap());
        let mut running = self.shared.running.lock().unwrap();
        let mut jobs = Vec::with_capacity(queued.len());
        for (job, reply) in queued {
            // A job whose attempt was given up while queued is not run.
            if !reply.is_closed() {
                running.insert(job.id, reply);
                jobs.push(job);
            }
        }
        jobs
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
        let data = JobData {
            id,
            topic: job.topic.to_string(),
            group: job.group.to_string(),
            attempt: job.attempt(),
            max_attempts: job.max_attempts,
            deadline: job.deadline.and_then(|d| d.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64() * 1000.0),
            message: MessageData::from(job.message.as_ref()),
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
