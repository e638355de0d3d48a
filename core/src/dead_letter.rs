//! Dead letters: why a message was given up on, and the operations on a
//! group's dead letters (list, redrive at a rate, purge) built once over the
//! backend primitives.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::message::Message;

/// Why a message was dead-lettered. Travels in the `pb-dl-*` headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetterReason {
    /// Topic the message came from.
    pub topic: String,
    /// Group that gave up on it.
    pub group: String,
    /// Attempts made, counting the last one.
    pub attempts: u32,
    /// Why the runtime gave up: see [`cause`] for the values.
    pub cause: String,
    /// Kind of the last error: the handler's error type (`ValueError`,
    /// `TypeError`, a Rust type name...), or `timeout`, `panic`, `malformed`.
    pub error_kind: String,
    /// The last error's message.
    pub error_message: String,
    /// When the first attempt failed.
    #[serde(with = "crate::message::millis")]
    pub first_failed_at: SystemTime,
    /// When the last attempt failed.
    #[serde(with = "crate::message::millis")]
    pub last_failed_at: SystemTime,
}

impl DeadLetterReason {
    /// The reason to show for a dead letter that carries none (put there by
    /// another tool).
    pub fn unknown(topic: &str, group: &str, attempts: u32, at: SystemTime) -> Self {
        DeadLetterReason {
            topic: topic.to_string(),
            group: group.to_string(),
            attempts,
            cause: "unknown".into(),
            error_kind: "unknown".into(),
            error_message: String::new(),
            first_failed_at: SystemTime::UNIX_EPOCH,
            last_failed_at: at,
        }
    }
}

/// Splits a stored dead letter into its message (reason headers removed)
/// and its reason. For backends.
pub fn from_stored(id: String, mut message: Message, topic: &str, group: &str, dead_at: SystemTime) -> DeadLetter {
    let reason = crate::wire::decode_reason(&message.headers)
        .unwrap_or_else(|| DeadLetterReason::unknown(topic, group, message.attempt, dead_at));
    crate::wire::strip_reason(&mut message.headers);
    DeadLetter { id, message, reason }
}

/// The copy of a dead letter that a redrive sends back: a fresh start with
/// attempt 1, no failure history, no delay and no reason. For backends.
pub fn redriven(mut message: Message) -> Message {
    message.attempt = 1;
    message.failures = None;
    message.deliver_at = None;
    crate::wire::strip_reason(&mut message.headers);
    message
}

/// Values of [`DeadLetterReason::cause`].
pub mod cause {
    /// The handler failed on every attempt of the retry budget.
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    /// The handler raised an error marked not retryable.
    pub const NOT_RETRYABLE: &str = "not_retryable";
    /// The message's metadata could not be read.
    pub const MALFORMED: &str = "malformed";
    /// Delivered more times than the budget allows without being settled
    /// (its consumers kept dying or losing their lease).
    pub const REDELIVERY_LIMIT: &str = "redelivery_limit";
}

/// A message in a group's dead letters.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Backend id of the dead letter (not the message id), for redrive and purge.
    pub id: String,
    /// The message as it was on its last attempt.
    pub message: Message,
    /// Why it is here.
    pub reason: DeadLetterReason,
}

impl DeadLetter {
    /// Builds a dead letter (for backends).
    pub fn new(id: String, message: Message, reason: DeadLetterReason) -> Self {
        DeadLetter { id, message, reason }
    }
}

/// Which dead letters an operation applies to. Empty filter: all of them.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    /// Only those whose error kind equals this.
    pub error_kind: Option<String>,
    /// Only those with this cause (see [`cause`]).
    pub cause: Option<String>,
    /// Only those whose error message contains this.
    pub error_contains: Option<String>,
    /// Only those dead-lettered at or before this time.
    pub failed_before: Option<SystemTime>,
    /// Only these message ids.
    pub message_ids: Option<Vec<String>>,
}

impl DeadLetterFilter {
    /// Whether `d` passes the filter.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.error_kind.as_ref().is_none_or(|k| &d.reason.error_kind == k)
            && self.cause.as_ref().is_none_or(|c| &d.reason.cause == c)
            && self.error_contains.as_ref().is_none_or(|s| d.reason.error_message.contains(s.as_str()))
            && self.failed_before.is_none_or(|t| d.reason.last_failed_at <= t)
            && self.message_ids.as_ref().is_none_or(|ids| ids.contains(&d.message.id))
    }
}

/// Options of a redrive.
#[derive(Clone, Debug, Default)]
pub struct RedriveOptions {
    /// Which dead letters.
    pub filter: DeadLetterFilter,
    /// At most this many messages per second (none: as fast as the broker takes them).
    pub per_second: Option<f64>,
    /// Stop after this many.
    pub limit: Option<usize>,
}

/// How many dead letters a page holds when the caller does not say: the
/// default `limit` of every language's `dead_letters`, and the page size
/// redrive and purge walk with.
pub const DEAD_LETTER_PAGE: usize = 100;

/// Sends matching dead letters back to their group, at most
/// `options.per_second` a second. Returns how many were redriven.
pub async fn redrive(broker: &dyn Broker, topic: &str, group: &str, options: &RedriveOptions) -> Result<usize> {
    redrive_reporting(broker, topic, group, options, &mut |_| {}).await
}

/// [`redrive`], calling `moved` with the running total after each slice
/// (for a progress bar).
pub async fn redrive_reporting(
    broker: &dyn Broker,
    topic: &str,
    group: &str,
    options: &RedriveOptions,
    moved: &mut (dyn FnMut(usize) + Send),
) -> Result<usize> {
    if let Some(rate) = options.per_second {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::invalid_option("per_second", "must be a positive number"));
        }
    }
    let started = Instant::now();
    let limit = options.limit.unwrap_or(usize::MAX);
    let mut done = 0usize;
    let mut after: Option<String> = None;
    while done < limit {
        let page = broker.list_dead_letters(topic, group, after.as_deref(), DEAD_LETTER_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let mut ids: Vec<String> = page.iter().filter(|d| options.filter.matches(d)).map(|d| d.id.clone()).collect();
        ids.truncate(limit - done);
        // Message n may go at `started + n / rate`; slices of a tenth of a
        // second's worth keep that smooth without one call per message.
        let slice = match options.per_second {
            Some(rate) => ((rate / 10.0).ceil() as usize).clamp(1, DEAD_LETTER_PAGE),
            None => DEAD_LETTER_PAGE,
        };
        for chunk in ids.chunks(slice) {
            if let Some(rate) = options.per_second {
                // The chunk may start once the ones before it have had their time.
                let due = started + Duration::from_secs_f64(done as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
            done += broker.redrive_dead_letters(topic, group, chunk).await?;
            moved(done);
        }
        if page.len() < DEAD_LETTER_PAGE {
            break;
        }
    }
    Ok(done)
}

/// Deletes matching dead letters. Returns how many were deleted.
pub async fn purge(broker: &dyn Broker, topic: &str, group: &str, filter: &DeadLetterFilter) -> Result<usize> {
    let everything = filter.error_kind.is_none()
        && filter.cause.is_none()
        && filter.error_contains.is_none()
        && filter.failed_before.is_none()
        && filter.message_ids.is_none();
    if everything {
        return broker.purge_dead_letters(topic, group, None).await;
    }
    let mut done = 0;
    let mut after: Option<String> = None;
    loop {
        let page = broker.list_dead_letters(topic, group, after.as_deref(), DEAD_LETTER_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let ids: Vec<String> = page.iter().filter(|d| filter.matches(d)).map(|d| d.id.clone()).collect();
        if !ids.is_empty() {
            done += broker.purge_dead_letters(topic, group, Some(&ids)).await?;
        }
        if page.len() < DEAD_LETTER_PAGE {
            break;
        }
    }
    Ok(done)
}
