//! The task layer: tasks registered by name, called with
//! [`Task::delay`] / [`Task::apply_async`], run by workers, the calls
//! travelling in the JSON envelope every language's task layer reads and
//! writes (docs/tasks.md). A Rust service runs the tasks a Django app
//! `.delay()`s, and calls tasks a Node or Python worker runs.
//!
//! Policy is the worker's, as for any handler: a task that fails is retried
//! with backoff, [`HandlerError::fatal`](crate::HandlerError::fatal)
//! dead-letters it; what can never run (not an envelope, a task this worker
//! does not have, arguments the task cannot take) dead-letters at once with
//! the kinds [`INVALID_ENVELOPE`], [`UNKNOWN_TASK`] and [`INVALID_ARGUMENTS`].

mod app;
mod envelope;
#[cfg(all(test, feature = "embedded"))]
mod tests;

pub use app::{App, Apply, Task, TaskOptions, DEFAULT_GROUP, DEFAULT_TOPIC};
pub use envelope::{to_args, to_kwargs, TaskCall, INVALID_ARGUMENTS, INVALID_ENVELOPE, TASK_HEADER, UNKNOWN_TASK};
