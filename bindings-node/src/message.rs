//! Messages, jobs, figures and dead letters as plain JavaScript objects.
//! Times are milliseconds since the Unix epoch, durations milliseconds.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use pillarbox::message::{from_millis, to_millis};
use pillarbox::Message;

use crate::errors::invalid_option;

/// A message to publish.
#[napi(object)]
pub struct MessageInput {
    pub payload: Buffer,
    pub key: Option<String>,
    pub idempotency_key: Option<String>,
    pub headers: Option<HashMap<String, String>>,
    pub content_type: Option<String>,
    /// Not delivered before this many milliseconds from now.
    pub delay_ms: Option<f64>,
    /// Not delivered before this time (milliseconds since the epoch).
    pub deliver_at: Option<f64>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl MessageInput {
    pub fn into_message(self) -> napi::Result<Message> {
        let mut m = Message::new(Vec::from(self.payload));
        m.key = self.key;
        m.idempotency_key = self.idempotency_key;
        m.content_type = self.content_type;
        m.traceparent = self.traceparent;
        m.tracestate = self.tracestate;
        m.headers = self.headers.unwrap_or_default().into_iter().collect();
        if let Some(ms) = self.delay_ms {
            m = m.with_delay(millis(ms, "delayMs")?);
        }
        if let Some(at) = self.deliver_at {
            m = m.with_deliver_at(UNIX_EPOCH + millis(at, "deliverAt")?);
        }
        Ok(m)
    }
}

/// A duration from milliseconds; a clear error for a negative or odd number.
/// Whole milliseconds stay exact (a time since the epoch divided by 1000 as
/// a float would not: a `deliverAt` came back a millisecond early).
pub fn millis(ms: f64, name: &str) -> napi::Result<Duration> {
    let whole = ms.trunc();
    let fraction = Duration::try_from_secs_f64((ms - whole) / 1000.0);
    match fraction {
        Ok(fraction) if (0.0..u64::MAX as f64).contains(&whole) => Ok(Duration::from_millis(whole as u64) + fraction),
        _ => Err(invalid_option(name, "must be a non-negative number of milliseconds")),
    }
}

fn epoch_ms(t: SystemTime) -> f64 {
    to_millis(t) as f64
}

/// What went wrong on earlier attempts.
#[napi(object)]
pub struct Failures {
    pub first_failed_at: f64,
    pub last_failed_at: f64,
    pub last_error_kind: String,
    pub last_error: String,
}

/// A received message with every metadata field.
#[napi(object)]
pub struct MessageData {
    pub id: String,
    pub payload: Buffer,
    pub key: Option<String>,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
    pub headers: HashMap<String, String>,
    pub attempt: u32,
    pub published_at: f64,
    pub deliver_at: Option<f64>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub schedule: Option<String>,
    pub scheduled_for: Option<f64>,
    pub failures: Option<Failures>,
}

impl From<&Message> for MessageData {
    fn from(m: &Message) -> Self {
        MessageData {
            id: m.id.clone(),
            // The one copy of the payload into JavaScript.
            payload: m.payload.to_vec().into(),
            key: m.key.clone(),
            idempotency_key: m.idempotency_key.clone(),
            content_type: m.content_type.clone(),
            headers: m.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            attempt: m.attempt,
            published_at: epoch_ms(m.published_at),
            deliver_at: m.deliver_at.map(epoch_ms),
            traceparent: m.traceparent.clone(),
            tracestate: m.tracestate.clone(),
            schedule: m.schedule.clone(),
            scheduled_for: m.scheduled_for.map(epoch_ms),
            failures: m.failures.as_ref().map(|f| Failures {
                first_failed_at: epoch_ms(f.first_failed_at),
                last_failed_at: epoch_ms(f.last_failed_at),
                last_error_kind: f.last_error_kind.clone(),
                last_error: f.last_error.clone(),
            }),
        }
    }
}

/// Lag of one partition.
#[napi(object)]
pub struct PartitionLag {
    pub partition: i32,
    pub committed: Option<i64>,
    pub end: i64,
    pub lag: i64,
}

/// A group's figures, from the broker.
#[napi(object)]
pub struct GroupStats {
    pub topic: String,
    pub group: String,
    pub ready: i64,
    /// Unknown (`null`) when the broker could not tell (RabbitMQ without its management plugin).
    pub in_flight: Option<i64>,
    pub waiting: i64,
    pub dead_letters: i64,
    /// Age of the oldest message not yet done, in milliseconds.
    pub oldest_age_ms: Option<f64>,
    pub partitions: Vec<PartitionLag>,
}

impl From<pillarbox::GroupStats> for GroupStats {
    fn from(s: pillarbox::GroupStats) -> Self {
        GroupStats {
            topic: s.topic,
            group: s.group,
            ready: s.ready as i64,
            in_flight: s.in_flight.map(|n| n as i64),
            waiting: s.waiting as i64,
            dead_letters: s.dead_letters as i64,
            oldest_age_ms: s.oldest_age.map(|d| d.as_secs_f64() * 1000.0),
            partitions: s
                .partitions
                .into_iter()
                .map(|p| PartitionLag { partition: p.partition, committed: p.committed, end: p.end, lag: p.lag })
                .collect(),
        }
    }
}

/// Why a message was dead-lettered.
#[napi(object)]
pub struct DeadLetterReason {
    pub topic: String,
    pub group: String,
    pub attempts: u32,
    pub cause: String,
    pub error_kind: String,
    pub error_message: String,
    pub first_failed_at: f64,
    pub last_failed_at: f64,
}

/// A message in a group's dead letters.
#[napi(object)]
pub struct DeadLetter {
    /// Backend id of the dead letter (not the message id), for redrive and purge.
    pub id: String,
    pub message: MessageData,
    pub reason: DeadLetterReason,
}

impl From<pillarbox::DeadLetter> for DeadLetter {
    fn from(d: pillarbox::DeadLetter) -> Self {
        let r = d.reason;
        DeadLetter {
            id: d.id,
            message: MessageData::from(&d.message),
            reason: DeadLetterReason {
                topic: r.topic,
                group: r.group,
                attempts: r.attempts,
                cause: r.cause,
                error_kind: r.error_kind,
                error_message: r.error_message,
                first_failed_at: epoch_ms(r.first_failed_at),
                last_failed_at: epoch_ms(r.last_failed_at),
            },
        }
    }
}

/// Which dead letters an operation applies to.
#[napi(object)]
pub struct DeadLetterFilter {
    pub error_kind: Option<String>,
    pub cause: Option<String>,
    pub error_contains: Option<String>,
    /// Only those dead-lettered at or before this time (milliseconds since the epoch).
    pub failed_before: Option<f64>,
    pub message_ids: Option<Vec<String>>,
    /// Redrive only: at most this many a second.
    pub per_second: Option<f64>,
    /// Redrive only: stop after this many.
    pub limit: Option<u32>,
}

impl DeadLetterFilter {
    pub fn to_core(&self) -> pillarbox::DeadLetterFilter {
        pillarbox::DeadLetterFilter {
            error_kind: self.error_kind.clone(),
            cause: self.cause.clone(),
            error_contains: self.error_contains.clone(),
            failed_before: self.failed_before.map(|ms| from_millis(ms.max(0.0) as u64)),
            message_ids: self.message_ids.clone(),
        }
    }
}
