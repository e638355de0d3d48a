//! The core's `Handler` over a JavaScript function: the bridge every worker
//! and the conformance suite go through.
//!
//! The facade (`index.js`) passes one function per worker that runs the
//! user's handler on the event loop and resolves to an outcome: `null` for
//! success, or `{ kind, message, retryable, retryAfterMs }`. Up to
//! `concurrency` of them run at once. When the core gives up on an attempt
//! (timeout, end of the shutdown grace) its future is dropped here, and the
//! `cancel` function aborts that job's `AbortSignal`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use napi::bindgen_prelude::Promise;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use pillarbox::{HandlerError, Job};

use crate::message::MessageData;

/// What the JavaScript side is given for each job.
#[napi(object)]
pub struct JobData {
    /// Names the job to `cancel`.
    pub cancel_id: u32,
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

/// What the handler did: `null` (success) or a failure.
#[napi(object)]
pub struct Outcome {
    pub kind: String,
    pub message: String,
    pub retryable: bool,
    pub retry_after_ms: Option<f64>,
}

/// `(job) => Promise<Outcome | null>`, weak: it never keeps Node alive.
pub type JsHandler = ThreadsafeFunction<JobData, Promise<Option<Outcome>>, JobData, Status, false, true>;
/// `(cancelId) => void`.
pub type JsCancel = ThreadsafeFunction<u32, (), u32, Status, false, true>;

pub struct NodeHandler {
    call: Arc<JsHandler>,
    cancel: Arc<JsCancel>,
    script: Option<String>,
    next_id: AtomicU32,
}

impl NodeHandler {
    pub fn new(call: Arc<JsHandler>, cancel: Arc<JsCancel>, script: Option<String>) -> Self {
        NodeHandler { call, cancel, script, next_id: AtomicU32::new(1) }
    }
}

#[async_trait]
impl pillarbox::Handler for NodeHandler {
    async fn handle(&self, job: Job) -> Result<(), HandlerError> {
        let cancel_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = JobData {
            cancel_id,
            topic: job.topic.to_string(),
            group: job.group.to_string(),
            attempt: job.attempt(),
            max_attempts: job.max_attempts,
            deadline: job.deadline.and_then(|d| d.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64() * 1000.0),
            message: MessageData::from(job.message.as_ref()),
            script: self.script.clone(),
        };
        let abort = AbortOnDrop { id: Some(cancel_id), cancel: Arc::clone(&self.cancel) };
        let promise = self.call.call_async_catch(data).await.map_err(thrown)?;
        let outcome = promise.await.map_err(thrown)?;
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

/// What escaped the facade (it catches what handlers throw): a retryable failure.
fn thrown(e: napi::Error) -> HandlerError {
    HandlerError::retryable(e.reason.clone()).with_kind("Error")
}

/// While the core waits for a job: dropped before it resolves, it aborts the job's signal.
struct AbortOnDrop {
    id: Option<u32>,
    cancel: Arc<JsCancel>,
}

impl AbortOnDrop {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.cancel.call(id, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}
