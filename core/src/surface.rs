//! The defaults of the public surface, written once, here: each package
//! reads them from its native module (Python's signatures and Django's
//! settings, Node's option handling) instead of writing its own copy, and
//! the parity tests check them against `tests/parity/surface.json`.
//!
//! Names are the core's (snake_case); durations are [`Duration`]s, which
//! Python shows in seconds and Node in milliseconds under the name with `Ms`.

use std::time::Duration;

use crate::dead_letter::DEAD_LETTER_PAGE;
use crate::tasks::{DEFAULT_GROUP, DEFAULT_TOPIC};
use crate::{RetryPolicy, WorkerOptions};

/// A default value, or none (the option is unset unless given).
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// A whole number.
    Count(u64),
    /// A duration, or none (unset unless given, named as durations are).
    Duration(Option<Duration>),
    /// A number that is not a count (a multiplier, a fraction).
    Number(f64),
    /// A name.
    Text(&'static str),
    /// No default: unset unless given.
    Unset,
}

/// One call's options with their defaults, by option name.
pub type CallDefaults = Vec<(&'static str, DefaultValue)>;

/// Every call's defaults: `worker` (without `retry`), `retry`,
/// `dead_letters` and `app`.
pub fn defaults() -> Vec<(&'static str, CallDefaults)> {
    use DefaultValue::{Count, Duration as Took, Number, Text, Unset};
    // Destructured whole: a new option is a compile error here until it
    // has its default in the manifest.
    let WorkerOptions {
        concurrency,
        prefetch,
        retry: _,
        handler_timeout,
        lease,
        poll_wait,
        shutdown_grace,
        idempotency_store,
        idempotency_retention,
        busy_key_delay,
        consumer_name,
    } = WorkerOptions::default();
    let RetryPolicy { max_retries, initial_delay, multiplier, max_delay, jitter } = RetryPolicy::default();
    let unset_unless = |given: bool| {
        assert!(!given, "an option without a default in the manifest has one in the core");
        Unset
    };
    vec![
        (
            "worker",
            vec![
                ("concurrency", Count(concurrency as u64)),
                ("prefetch", unset_unless(prefetch.is_some())),
                ("handler_timeout", Took(handler_timeout)),
                ("lease", Took(Some(lease))),
                ("poll_wait", Took(Some(poll_wait))),
                ("shutdown_grace", Took(Some(shutdown_grace))),
                ("idempotency_store", unset_unless(idempotency_store.is_some())),
                ("idempotency_retention", Took(Some(idempotency_retention))),
                ("busy_key_delay", Took(Some(busy_key_delay))),
                ("consumer_name", unset_unless(consumer_name.is_some())),
            ],
        ),
        (
            "retry",
            vec![
                ("max_retries", Count(max_retries.into())),
                ("initial_delay", Took(Some(initial_delay))),
                ("multiplier", Number(multiplier)),
                ("max_delay", Took(Some(max_delay))),
                ("jitter", Number(jitter)),
            ],
        ),
        ("dead_letters", vec![("limit", Count(DEAD_LETTER_PAGE as u64))]),
        ("app", vec![("group", Text(DEFAULT_GROUP)), ("default_topic", Text(DEFAULT_TOPIC))]),
    ]
}
