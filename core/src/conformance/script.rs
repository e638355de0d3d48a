//! What a scenario's handler does, written as data, so that Rust, Python
//! and Node run the same scenarios each with handlers of their own.
//!
//! A scenario describes its handler as a [`Script`]; the caller's
//! [`Handlers`] turns the script into a handler in its language (Rust here,
//! [`RustHandlers`]; Python and JavaScript in the packages, which receive the
//! script as JSON). The harness wraps that handler in a [`Recorder`], in
//! Rust, so every scenario checks what the worker handed out the same way
//! whatever language acted it out.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::worker::{Handler, HandlerError, Job};

/// A handler's behaviour for the messages it applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Applies to messages whose payload starts with this text; `None`: to all.
    pub payload_prefix: Option<String>,
    /// Works this long before answering.
    pub work_ms: u64,
    /// Works by keeping its thread busy (CPU-bound code: holding the GIL in
    /// Python, blocking the event loop in Node) rather than by waiting.
    /// Blocking work does not notice cancellation; waiting work stops when
    /// the job is cancelled and fails.
    pub blocking: bool,
    /// Fails attempts 1 through this one: 0 never fails, `u32::MAX` always.
    pub fail_through: u32,
    /// How it fails.
    pub failure: Failing,
}

/// How a scripted handler fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum Failing {
    /// A retryable error: `kind` is its type (a Python exception class, a
    /// JavaScript error's `name`), `message` its text.
    Error {
        /// Error type.
        kind: String,
        /// Error text.
        message: String,
    },
    /// An error no retry can fix (`HandlerError::fatal`, Python's
    /// `pillarbox.Fatal`, JavaScript's `Fatal`).
    Fatal {
        /// Error type.
        kind: String,
        /// Error text.
        message: String,
    },
    /// The language's unplanned failure: a Rust panic, a Python exception
    /// from a bug, a JavaScript `throw` of something that is not an Error.
    Panic {
        /// What the panic says.
        message: String,
    },
}

impl Default for Failing {
    fn default() -> Self {
        Failing::Error { kind: "error".into(), message: "failed".into() }
    }
}

impl Behaviour {
    /// Applies only to messages whose payload starts with `prefix`.
    pub fn for_payload(mut self, prefix: &str) -> Self {
        self.payload_prefix = Some(prefix.into());
        self
    }

    /// Waits `ms` before answering (cancellable).
    pub fn waits(mut self, ms: u64) -> Self {
        self.work_ms = ms;
        self
    }

    /// Keeps its thread busy for `ms` before answering.
    pub fn blocks(mut self, ms: u64) -> Self {
        self.work_ms = ms;
        self.blocking = true;
        self
    }

    /// Fails attempts 1 through `attempt` as `failure`.
    pub fn fails_through(mut self, attempt: u32, failure: Failing) -> Self {
        self.fail_through = attempt;
        self.failure = failure;
        self
    }

    /// Fails every attempt as `failure`.
    pub fn always_fails(self, failure: Failing) -> Self {
        self.fails_through(u32::MAX, failure)
    }

    fn applies_to(&self, payload: &[u8]) -> bool {
        self.payload_prefix.as_ref().is_none_or(|p| payload.starts_with(p.as_bytes()))
    }
}

impl Failing {
    /// A retryable error.
    pub fn error(kind: &str, message: &str) -> Self {
        Failing::Error { kind: kind.into(), message: message.into() }
    }

    /// A not-retryable error.
    pub fn fatal(kind: &str, message: &str) -> Self {
        Failing::Fatal { kind: kind.into(), message: message.into() }
    }

    /// A panic.
    pub fn panic(message: &str) -> Self {
        Failing::Panic { message: message.into() }
    }
}

/// A handler as data: for each job, the first behaviour that applies to its
/// payload; a job none applies to succeeds at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// The behaviours, in order.
    pub behaviours: Vec<Behaviour>,
}

impl Script {
    /// Succeeds at once on every job.
    pub fn succeed() -> Self {
        Script::default()
    }

    /// Behaves as `behaviour` (where it applies).
    pub fn of(behaviour: Behaviour) -> Self {
        Script { behaviours: vec![behaviour] }
    }

    /// Adds a behaviour, for payloads the earlier ones do not apply to.
    pub fn then(mut self, behaviour: Behaviour) -> Self {
        self.behaviours.push(behaviour);
        self
    }

    /// The behaviour for a message with this payload.
    pub fn behaviour_for(&self, payload: &[u8]) -> Option<&Behaviour> {
        self.behaviours.iter().find(|b| b.applies_to(payload))
    }

    /// The script as JSON, as the bindings receive it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a script always serializes")
    }
}

/// Makes the handlers the scenarios run, in the caller's language. The
/// Python and Node packages implement it over their own handler types, so
/// the scenarios exercise their handler plumbing (job conversion, errors,
/// cancellation, threads and event loops) against the same assertions.
pub trait Handlers: Send + Sync + 'static {
    /// A handler that acts out `script` on each job it is given.
    fn handler(&self, script: &Script) -> Arc<dyn Handler>;
}

/// Handlers written in Rust.
#[derive(Clone, Copy, Debug, Default)]
pub struct RustHandlers;

impl Handlers for RustHandlers {
    fn handler(&self, script: &Script) -> Arc<dyn Handler> {
        Arc::new(ActsOut(script.clone()))
    }
}

struct ActsOut(Script);

#[async_trait]
impl Handler for ActsOut {
    async fn handle(&self, job: Job) -> Result<(), HandlerError> {
        let Some(b) = self.0.behaviour_for(&job.message.payload) else { return Ok(()) };
        let work = Duration::from_millis(b.work_ms);
        if b.blocking {
            std::thread::sleep(work);
        } else if !work.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(work) => {}
                _ = job.cancelled() => return Err(HandlerError::retryable("cancelled").with_kind("cancelled")),
            }
        }
        if job.attempt() > b.fail_through {
            return Ok(());
        }
        match &b.failure {
            Failing::Error { kind, message } => Err(HandlerError::retryable(message.clone()).with_kind(kind.clone())),
            Failing::Fatal { kind, message } => Err(HandlerError::fatal(message.clone()).with_kind(kind.clone())),
            Failing::Panic { message } => panic!("{message}"),
        }
    }
}

/// Records the jobs handlers are given (when each starts), the order they
/// finish in, and counts those that succeeded. Clones share the record, so
/// handlers of several workers can report to one.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    seen: Arc<Mutex<Vec<(Job, Instant)>>>,
    finished: Arc<Mutex<Vec<String>>>,
    succeeded: Arc<AtomicU32>,
}

impl Recorder {
    /// `handler`, reporting to this record.
    pub(crate) fn wrap(&self, handler: Arc<dyn Handler>) -> impl Handler {
        Recorded { handler, record: self.clone() }
    }

    /// Jobs started.
    pub(crate) fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Jobs that succeeded: the handler's effects.
    pub(crate) fn succeeded(&self) -> u32 {
        self.succeeded.load(Ordering::SeqCst)
    }

    /// Jobs started, with when.
    pub(crate) fn jobs(&self) -> Vec<(Job, Instant)> {
        self.seen.lock().unwrap().clone()
    }

    /// Payloads of the jobs that returned (whatever their outcome), as text,
    /// in the order they returned.
    pub(crate) fn finished_payloads(&self) -> Vec<String> {
        self.finished.lock().unwrap().clone()
    }

    /// Payloads of the jobs started, as text, in order.
    pub(crate) fn payloads(&self) -> Vec<String> {
        self.jobs().iter().map(|(j, _)| String::from_utf8_lossy(&j.message.payload).into_owned()).collect()
    }
}

struct Recorded {
    handler: Arc<dyn Handler>,
    record: Recorder,
}

#[async_trait]
impl Handler for Recorded {
    async fn handle(&self, job: Job) -> Result<(), HandlerError> {
        self.record.seen.lock().unwrap().push((job.clone(), Instant::now()));
        let payload = String::from_utf8_lossy(&job.message.payload).into_owned();
        let outcome = self.handler.handle(job).await;
        self.record.finished.lock().unwrap().push(payload);
        if outcome.is_ok() {
            self.record.succeeded.fetch_add(1, Ordering::SeqCst);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_behaviour_that_applies_wins_and_others_succeed() {
        let script = Script::of(Behaviour::default().for_payload("k1:").waits(5))
            .then(Behaviour::default().for_payload("k").blocks(7));
        assert_eq!(script.behaviour_for(b"k1:0").map(|b| b.work_ms), Some(5));
        assert_eq!(script.behaviour_for(b"k2:0").map(|b| b.work_ms), Some(7));
        assert_eq!(script.behaviour_for(b"other"), None);
    }

    #[test]
    fn a_script_travels_as_json_with_defaults_filled_in() {
        let script = Script::of(Behaviour::default().always_fails(Failing::fatal("ParseError", "cannot parse")));
        let json = script.to_json();
        assert!(json.contains(r#""failure":{"as":"fatal","kind":"ParseError","message":"cannot parse"}"#), "{json}");
        let back: Script = serde_json::from_str(&json).unwrap();
        assert_eq!(back, script);
        let short: Script = serde_json::from_str(r#"{"behaviours":[{"work_ms":3}]}"#).unwrap();
        assert_eq!(short.behaviours[0], Behaviour::default().waits(3));
    }

    #[tokio::test]
    async fn rust_handlers_act_out_attempts_and_failures() {
        let handler =
            RustHandlers.handler(&Script::of(Behaviour::default().fails_through(2, Failing::error("E", "no"))));
        let mut message = crate::Message::new("x");
        for attempt in 1..=3 {
            message.attempt = attempt;
            let outcome = handler.handle(Job::new(message.clone(), "t", "g", 4)).await;
            let expected = if attempt <= 2 { Err(HandlerError::retryable("no").with_kind("E")) } else { Ok(()) };
            assert_eq!(outcome, expected, "attempt {attempt}");
        }
    }
}
