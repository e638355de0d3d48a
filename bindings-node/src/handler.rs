//! The core's `Handler` over JavaScript: the bridge every worker and the
//! conformance suite go through.
//!
//! Jobs cross to the event loop in batches, as the Python package's
//! coroutines do: the core's handler calls queue their job and wake the
//! loop once (a weak threadsafe function: it never keeps Node alive); the
//! facade (`index.js`) then takes every queued job in one call, as one
//! buffer, runs the handlers, and reports the successes of a turn of the
//! event loop with one synchronous call. A call and a Promise per job
//! across the boundary cost about four times as much.
//!
//! When the core gives up on an attempt (timeout, end of the shutdown grace)
//! its future is dropped here, and the facade is told to abort that job's
//! `AbortSignal`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use napi::bindgen_prelude::{BufferSlice, Uint32Array};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use pillarbox::message::to_millis;
use pillarbox::{HandlerError, Job, Message};
use tokio::sync::oneshot;

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

impl QueuedJob {
    /// Appends the job to a block of jobs (the layout `index.js` reads,
    /// little-endian): numbers at fixed places, then the payload and the
    /// script, which every handler call needs, then the rest of the
    /// metadata, which the facade decodes only if the handler asks for it.
    /// One buffer per batch rather than a JavaScript value per field: a
    /// value costs a call across the boundary and a payload its own
    /// allocation.
    ///
    /// ```text
    /// u32 size (of the whole record)   u32 id   u32 attempt   u32 max_attempts
    /// f64 deadline (NaN: none)         u32 payload length, payload   str script
    /// u32 message attempt   f64 published at   f64 deliver at (NaN: none)   f64 scheduled for (NaN: none)
    /// str id, topic, group, key, idempotency key, content type, traceparent, tracestate, schedule
    /// u32 headers, then str name, str value each
    /// u8 failures (0 or 1), then f64 first, f64 last, str kind, str error
    /// ```
    ///
    /// `str` is a u32 length (`NONE`: null) and that many bytes of UTF-8.
    fn encode(&self, out: &mut Vec<u8>) {
        let m = &self.message;
        let ms = |t: SystemTime| to_millis(t) as f64;
        let start = out.len();
        out.extend_from_slice(&0u32.to_le_bytes()); // the size, filled in last
        for n in [self.id, self.attempt, self.max_attempts] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.deadline.unwrap_or(f64::NAN).to_le_bytes());
        put_bytes(out, Some(&m.payload[..]));
        put_str(out, self.script.as_deref());
        out.extend_from_slice(&m.attempt.to_le_bytes());
        out.extend_from_slice(&ms(m.published_at).to_le_bytes());
        out.extend_from_slice(&m.deliver_at.map(ms).unwrap_or(f64::NAN).to_le_bytes());
        out.extend_from_slice(&m.scheduled_for.map(ms).unwrap_or(f64::NAN).to_le_bytes());
        for text in [
            Some(m.id.as_str()),
            Some(&*self.topic),
            Some(&*self.group),
            m.key.as_deref(),
            m.idempotency_key.as_deref(),
            m.content_type.as_deref(),
            m.traceparent.as_deref(),
            m.tracestate.as_deref(),
            m.schedule.as_deref(),
        ] {
            put_str(out, text);
        }
        out.extend_from_slice(&(m.headers.len() as u32).to_le_bytes());
        for (name, value) in &m.headers {
            put_str(out, Some(name));
            put_str(out, Some(value));
        }
        match &m.failures {
            None => out.push(0),
            Some(f) => {
                out.push(1);
                out.extend_from_slice(&ms(f.first_failed_at).to_le_bytes());
                out.extend_from_slice(&ms(f.last_failed_at).to_le_bytes());
                put_str(out, Some(&f.last_error_kind));
                put_str(out, Some(&f.last_error));
            }
        }
        let size = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&size.to_le_bytes());
    }
}

/// Most room the encoding buffer keeps between batches.
const KEPT_BLOCK_BYTES: usize = 1 << 20;

/// The length that stands for a null string.
const NONE: u32 = u32::MAX;

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.extend_from_slice(&NONE.to_le_bytes()),
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

fn put_str(out: &mut Vec<u8>, text: Option<&str>) {
    put_bytes(out, text.map(str::as_bytes))
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
    /// Where `take` encodes a batch (kept for its capacity, up to `KEPT_BLOCK_BYTES`).
    block: Mutex<Vec<u8>>,
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
            block: Mutex::new(Vec::new()),
        };
        Dispatcher { shared: Arc::new(shared) }
    }

    /// Every job queued since the last call, as one block (see `QueuedJob::encode`).
    #[napi]
    pub fn take<'env>(&self, env: &'env Env) -> napi::Result<BufferSlice<'env>> {
        // Cleared first: a job queued from now on wakes the loop again.
        self.shared.woken.store(false, Ordering::SeqCst);
        let queued = std::mem::take(&mut *self.shared.queued.lock().unwrap());
        let mut block = self.shared.block.lock().unwrap();
        block.clear();
        let mut running = self.shared.running.lock().unwrap();
        for (job, reply) in queued {
            // A job whose attempt was given up while queued is not run.
            if !reply.is_closed() {
                job.encode(&mut block);
                running.insert(job.id, reply);
            }
        }
        // One copy into memory V8 owns: no finalizer to run, and the
        // payloads handed to handlers are views of it.
        let copy = BufferSlice::copy_from(env, &block[..]);
        // Kept for the next batch, but not the room one of large messages took.
        block.clear();
        block.shrink_to(KEPT_BLOCK_BYTES);
        copy
    }

    /// The handlers of these jobs succeeded.
    #[napi]
    pub fn succeed(&self, ids: Uint32Array) {
        let mut running = self.shared.running.lock().unwrap();
        for id in ids.iter() {
            if let Some(reply) = running.remove(id) {
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
