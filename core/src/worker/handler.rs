//! What a handler is given and what it returns.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::message::Message;

/// The job a handler runs: the message, where it stands in its budget, and
/// when it must stop.
///
/// A handler that runs outside this runtime's futures (a Python coroutine,
/// a JavaScript promise, a thread) is not stopped by the worker dropping
/// its future: it should watch [`Job::cancelled`] (or poll
/// [`Job::is_cancelled`]) and stop early, leaving nothing half-done that a
/// retry cannot redo. The message goes back to the broker either way.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Job {
    /// The message (shared with the worker's record of the delivery, not copied).
    pub message: Arc<Message>,
    /// Topic it came from.
    pub topic: Arc<str>,
    /// Group it is handled for.
    pub group: Arc<str>,
    /// Attempts the retry budget allows in all.
    pub max_attempts: u32,
    /// When this attempt times out (the worker's `handler_timeout`), if it can.
    pub deadline: Option<SystemTime>,
    cancellation: CancellationToken,
}

impl Job {
    /// A job for `message` (for handlers tested on their own, and for the
    /// bindings): no deadline, never cancelled unless
    /// [`Job::with_cancellation`] says otherwise.
    pub fn new(
        message: impl Into<Arc<Message>>,
        topic: impl Into<Arc<str>>,
        group: impl Into<Arc<str>>,
        max_attempts: u32,
    ) -> Self {
        Job {
            message: message.into(),
            topic: topic.into(),
            group: group.into(),
            max_attempts,
            deadline: None,
            cancellation: CancellationToken::new(),
        }
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: SystemTime) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Cancels this job when `token` is cancelled.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancellation = token;
        self
    }

    /// This attempt's number, 1 on first delivery.
    pub fn attempt(&self) -> u32 {
        self.message.attempt
    }

    /// Whether a failure now goes to the dead letters rather than a retry.
    pub fn is_last_attempt(&self) -> bool {
        self.message.attempt >= self.max_attempts
    }

    /// Whether the worker has given up on this attempt: its `handler_timeout`
    /// passed, or the shutdown grace ended while it ran. Whatever the
    /// handler does after that is not waited for; the message is retried
    /// (timeout) or handed back (shutdown).
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Completes when the job is cancelled (see [`Job::is_cancelled`]).
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await
    }

    /// The job's cancellation token, for a binding that forwards it to its
    /// own runtime (cancelling an asyncio task, aborting an `AbortSignal`).
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancellation
    }
}

/// A handler's failure. Retryable unless made with [`HandlerError::fatal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    /// Error type (`ValueError`, a Rust type name...); `error` when unknown.
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// Wait this long before the retry instead of the policy's backoff.
    pub retry_after: Option<Duration>,
}

impl HandlerError {
    /// A failure that is worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError { kind: "error".into(), message: message.into(), retryable: true, retry_after: None }
    }

    /// A failure no retry can fix: the message goes to the dead letters at once.
    pub fn fatal(message: impl Into<String>) -> Self {
        HandlerError { retryable: false, ..Self::retryable(message) }
    }

    /// Sets the error kind.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Asks for the retry after `delay` instead of the policy's backoff
    /// (still within the retry budget).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// From any error value: retryable, kind = its type name.
    pub fn from_error<E: std::error::Error>(error: &E) -> Self {
        let kind = std::any::type_name::<E>().rsplit("::").next().unwrap_or("error").to_string();
        HandlerError::retryable(error.to_string()).with_kind(kind)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::retryable(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::retryable(message)
    }
}

/// Runs jobs. Implemented for every `Fn(Job) -> impl Future<Output =
/// Result<(), HandlerError>>`; the Python and Node packages implement it
/// over their own callables.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one job. `Err` retries or dead-letters it; a panic counts as
    /// a retryable failure of kind `panic`.
    async fn handle(&self, job: Job) -> Result<(), HandlerError>;
}

#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, job: Job) -> Result<(), HandlerError> {
        (self)(job).await
    }
}
