//! The one documented set of metadata names on the wire.
//!
//! Every backend carries metadata in its native headers (AMQP headers, Kafka
//! record headers, Redis stream fields, embedded columns) under exactly these
//! names, with string values; the payload travels as raw bytes. Times are
//! whole milliseconds since the Unix epoch, in decimal. A message from a
//! plain client with none of these headers is still consumed: missing fields
//! get defaults (a fresh id, attempt from the delivery count). Application
//! headers may use any name that does not start with `pb-`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;

use crate::dead_letter::DeadLetterReason;
use crate::message::{from_millis, new_message_id, to_millis, uuid7_millis, FailureHistory, Message};

/// Prefix reserved for Pillarbox metadata.
pub const RESERVED_PREFIX: &str = "pb-";

/// Unique, time-ordered message id.
pub const ID: &str = "pb-id";
/// Partition / routing key.
pub const KEY: &str = "pb-key";
/// Idempotency key.
pub const IDEMPOTENCY_KEY: &str = "pb-idempotency-key";
/// Content type of the payload.
pub const CONTENT_TYPE: &str = "pb-content-type";
/// Attempt number, 1 on first delivery (absent means 1).
pub const ATTEMPT: &str = "pb-attempt";
/// Publish time (ms since epoch).
pub const PUBLISHED_AT: &str = "pb-published-at";
/// Not delivered before (ms since epoch).
pub const DELIVER_AT: &str = "pb-deliver-at";
/// W3C trace context (standard name, so tracing tools see it as is).
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state (standard name).
pub const TRACESTATE: &str = "tracestate";
/// When the first attempt failed (ms since epoch).
pub const FIRST_FAILED_AT: &str = "pb-first-failed-at";
/// When the latest attempt failed (ms since epoch).
pub const LAST_FAILED_AT: &str = "pb-last-failed-at";
/// Kind of the latest error.
pub const LAST_ERROR_KIND: &str = "pb-last-error-kind";
/// Message of the latest error.
pub const LAST_ERROR: &str = "pb-last-error";

/// Dead letters: the topic the message came from.
pub const DL_TOPIC: &str = "pb-dl-topic";
/// Dead letters: the group that gave up on it.
pub const DL_GROUP: &str = "pb-dl-group";
/// Dead letters: attempts made.
pub const DL_ATTEMPTS: &str = "pb-dl-attempts";
/// Dead letters: why the runtime gave up (`retries_exhausted`, `not_retryable`, `malformed`, `redelivery_limit`).
pub const DL_CAUSE: &str = "pb-dl-cause";
/// Dead letters: kind of the final error (the handler's error type, `timeout`, `panic`, `malformed`).
pub const DL_ERROR_KIND: &str = "pb-dl-error-kind";
/// Dead letters: message of the final error.
pub const DL_ERROR_MESSAGE: &str = "pb-dl-error-message";
/// The schedule that published the message.
pub const SCHEDULE: &str = "pb-schedule";
/// The tick a scheduled message was published for (ms since epoch).
pub const SCHEDULED_FOR: &str = "pb-scheduled-for";
/// Dead letters: first failure (ms since epoch).
pub const DL_FIRST_FAILED_AT: &str = "pb-dl-first-failed-at";
/// Dead letters: last failure (ms since epoch).
pub const DL_LAST_FAILED_AT: &str = "pb-dl-last-failed-at";

/// Whether `name` is a reserved metadata name.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX) || name == TRACEPARENT || name == TRACESTATE
}

/// Metadata and application headers of `m`, as wire name/value pairs.
pub fn encode_headers(m: &Message) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(6 + m.headers.len());
    visit_headers(m, |name, value| out.push((name.to_string(), value.to_string())));
    out
}

/// Total length of the names and values [`encode_headers`] produces,
/// computed without building them.
pub fn encoded_headers_len(m: &Message) -> usize {
    let mut n = 0;
    visit_headers(m, |name, value| n += name.len() + value.len());
    n
}

/// Calls `field` with each name/value pair [`encode_headers`] produces, in
/// the same order, without allocating: for backends that write them
/// straight into a command or a record.
pub fn visit_headers(m: &Message, mut field: impl FnMut(&str, &str)) {
    let mut digits = [0u8; 20];
    field(ID, &m.id);
    if let Some(k) = &m.key {
        field(KEY, k);
    }
    if let Some(k) = &m.idempotency_key {
        field(IDEMPOTENCY_KEY, k);
    }
    if let Some(c) = &m.content_type {
        field(CONTENT_TYPE, c);
    }
    if m.attempt != 1 {
        // Absent means 1: the common case costs nothing on the wire.
        field(ATTEMPT, decimal(u64::from(m.attempt), &mut digits));
    }
    let published = to_millis(m.published_at);
    if uuid7_millis(&m.id) != Some(published) {
        // Absent when the id (a UUIDv7, as `Message::new` makes them)
        // carries the same millisecond: one field fewer on every message.
        field(PUBLISHED_AT, decimal(published, &mut digits));
    }
    if let Some(t) = m.deliver_at {
        field(DELIVER_AT, decimal(to_millis(t), &mut digits));
    }
    if let Some(t) = &m.traceparent {
        field(TRACEPARENT, t);
    }
    if let Some(t) = &m.tracestate {
        field(TRACESTATE, t);
    }
    if let Some(s) = &m.schedule {
        field(SCHEDULE, s);
    }
    if let Some(t) = m.scheduled_for {
        field(SCHEDULED_FOR, decimal(to_millis(t), &mut digits));
    }
    if let Some(f) = &m.failures {
        field(FIRST_FAILED_AT, decimal(to_millis(f.first_failed_at), &mut digits));
        field(LAST_FAILED_AT, decimal(to_millis(f.last_failed_at), &mut digits));
        field(LAST_ERROR_KIND, &f.last_error_kind);
        field(LAST_ERROR, &f.last_error);
    }
    for (k, v) in &m.headers {
        field(k, v);
    }
}

/// `n` in decimal, written into `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[start..]).expect("ASCII digits")
}

/// The dead-letter reason as wire name/value pairs.
pub fn encode_reason(r: &DeadLetterReason) -> Vec<(String, String)> {
    vec![
        (DL_TOPIC.to_string(), r.topic.clone()),
        (DL_GROUP.to_string(), r.group.clone()),
        (DL_ATTEMPTS.to_string(), r.attempts.to_string()),
        (DL_CAUSE.to_string(), r.cause.clone()),
        (DL_ERROR_KIND.to_string(), r.error_kind.clone()),
        (DL_ERROR_MESSAGE.to_string(), r.error_message.clone()),
        (DL_FIRST_FAILED_AT.to_string(), to_millis(r.first_failed_at).to_string()),
        (DL_LAST_FAILED_AT.to_string(), to_millis(r.last_failed_at).to_string()),
    ]
}

/// Removes the dead-letter reason fields (`pb-dl-*`) from headers.
pub fn strip_reason(headers: &mut BTreeMap<String, String>) {
    headers.retain(|k, _| !k.starts_with("pb-dl-"));
}

/// Reads a dead-letter reason back; `None` when the fields are missing.
pub fn decode_reason(headers: &BTreeMap<String, String>) -> Option<DeadLetterReason> {
    let ms = |name: &str| headers.get(name).and_then(|v| v.parse::<u64>().ok()).map(from_millis);
    Some(DeadLetterReason {
        topic: headers.get(DL_TOPIC)?.clone(),
        group: headers.get(DL_GROUP)?.clone(),
        attempts: headers.get(DL_ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0),
        cause: headers.get(DL_CAUSE).cloned().unwrap_or_default(),
        error_kind: headers.get(DL_ERROR_KIND).cloned().unwrap_or_default(),
        error_message: headers.get(DL_ERROR_MESSAGE).cloned().unwrap_or_default(),
        first_failed_at: ms(DL_FIRST_FAILED_AT).unwrap_or(SystemTime::UNIX_EPOCH),
        last_failed_at: ms(DL_LAST_FAILED_AT).unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

/// A message read off the wire.
#[derive(Debug)]
pub struct Decoded {
    /// The message, with defaults wherever metadata was missing or bad.
    pub message: Message,
    /// Set when some metadata was present but malformed: the runtime
    /// dead-letters such a message with this reason instead of running it.
    pub malformed: Option<String>,
}

/// Builds a message from wire headers and payload.
///
/// `delivery_count` is how many times the backend has handed this stored
/// copy out (1 the first time); a message without our attempt header gets it
/// as its attempt, and one with the header gets `attempt + delivery_count - 1`,
/// so a redelivery after a crash counts as an attempt on every backend.
/// Dead-letter reason fields (`pb-dl-*`) are left in `headers` for
/// [`decode_reason`]; other reserved names are consumed. Names and values
/// may be borrowed (a backend reading its client's buffers): only those
/// the message keeps are copied.
pub fn decode<N, V>(fields: impl IntoIterator<Item = (N, V)>, payload: Bytes, delivery_count: u32) -> Decoded
where
    N: AsRef<str> + Into<String>,
    V: AsRef<str> + Into<String>,
{
    let mut message = Message {
        id: String::new(),
        key: None,
        idempotency_key: None,
        content_type: None,
        headers: BTreeMap::new(),
        attempt: 1,
        published_at: SystemTime::UNIX_EPOCH,
        deliver_at: None,
        traceparent: None,
        tracestate: None,
        schedule: None,
        scheduled_for: None,
        failures: None,
        payload: Bytes::new(),
    };
    let malformed = decode_into(&mut message, fields, payload, delivery_count);
    Decoded { message, malformed }
}

/// [`decode`] into a message that held an earlier one, reusing its
/// allocations (the id's buffer above all): for a backend that recycles
/// the messages its consumer is done with. Returns what [`Decoded::malformed`] holds.
pub fn decode_into<N, V>(
    m: &mut Message,
    fields: impl IntoIterator<Item = (N, V)>,
    payload: Bytes,
    delivery_count: u32,
) -> Option<String>
where
    N: AsRef<str> + Into<String>,
    V: AsRef<str> + Into<String>,
{
    let mut problems: Vec<String> = Vec::new();
    // Every field is set afresh (the headers map keeps its nodes' allocator only).
    m.headers.clear();
    m.id.clear();
    (m.key, m.idempotency_key, m.content_type) = (None, None, None);
    (m.attempt, m.published_at, m.deliver_at) = (1, SystemTime::UNIX_EPOCH, None);
    (m.traceparent, m.tracestate, m.failures) = (None, None, None);
    (m.schedule, m.scheduled_for) = (None, None);
    m.payload = payload;
    let mut attempt: Option<u32> = None;
    let mut published_at = None;
    let (mut first_failed, mut last_failed, mut last_kind, mut last_error) = (None, None, None, None);

    let millis = |name: &str, v: &str, problems: &mut Vec<String>| match v.trim().parse::<u64>() {
        Ok(ms) => Some(from_millis(ms)),
        Err(_) => {
            problems.push(format!("`{name}` is not a time in milliseconds: `{}`", truncate(v)));
            None
        }
    };

    for (name, value) in fields {
        let text = value.as_ref();
        match name.as_ref() {
            // Copied into the buffer the id already has (a recycled message's).
            ID => {
                m.id.clear();
                m.id.push_str(text);
            }
            KEY => m.key = Some(value.into()),
            IDEMPOTENCY_KEY => m.idempotency_key = Some(value.into()),
            CONTENT_TYPE => m.content_type = Some(value.into()),
            ATTEMPT => match text.trim().parse::<u32>() {
                Ok(n) if n >= 1 => attempt = Some(n),
                _ => problems.push(format!("`{ATTEMPT}` is not a positive whole number: `{}`", truncate(text))),
            },
            PUBLISHED_AT => published_at = millis(PUBLISHED_AT, text, &mut problems),
            DELIVER_AT => m.deliver_at = millis(DELIVER_AT, text, &mut problems),
            TRACEPARENT => m.traceparent = Some(value.into()),
            TRACESTATE => m.tracestate = Some(value.into()),
            SCHEDULE => m.schedule = Some(value.into()),
            SCHEDULED_FOR => m.scheduled_for = millis(SCHEDULED_FOR, text, &mut problems),
            FIRST_FAILED_AT => first_failed = millis(FIRST_FAILED_AT, text, &mut problems),
            LAST_FAILED_AT => last_failed = millis(LAST_FAILED_AT, text, &mut problems),
            LAST_ERROR_KIND => last_kind = Some(value.into()),
            LAST_ERROR => last_error = Some(value.into()),
            _ => {
                m.headers.insert(name.into(), value.into());
            }
        }
    }
    // Without an id on the wire (a plain client's message), a fresh one.
    let from_wire = !m.id.is_empty();
    if !from_wire {
        m.id = new_message_id();
    }
    let redeliveries = delivery_count.saturating_sub(1);
    m.attempt = attempt.unwrap_or(1).saturating_add(redeliveries);
    // Without the header, a UUIDv7 id from the wire carries the publish time.
    if let Some(p) = published_at.or_else(|| uuid7_millis(&m.id).filter(|_| from_wire).map(from_millis)) {
        m.published_at = p;
    }
    if let (Some(first), Some(last)) = (first_failed, last_failed) {
        m.failures = Some(FailureHistory {
            first_failed_at: first,
            last_failed_at: last,
            last_error_kind: last_kind.unwrap_or_default(),
            last_error: last_error.unwrap_or_default(),
        });
    }
    if problems.is_empty() {
        None
    } else {
        Some(problems.join("; "))
    }
}

fn truncate(v: &str) -> String {
    v.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A message with every field set.
    fn full_message() -> Message {
        let mut m = Message::new("hello")
            .with_key("k")
            .with_idempotency_key("idem")
            .with_content_type("text/plain")
            .with_header("tenant", "acme")
            .with_delay(Duration::from_secs(5))
            .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        m.tracestate = Some("a=b".into());
        m.schedule = Some("nightly-import".into());
        m.scheduled_for = Some(from_millis(1_765_000_000_000));
        m.attempt = 3;
        m.failures = Some(FailureHistory {
            first_failed_at: from_millis(1000),
            last_failed_at: from_millis(2000),
            last_error_kind: "ValueError".into(),
            last_error: "boom".into(),
        });
        m
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let m = full_message();
        let headers = encode_headers(&m);
        assert_eq!(encoded_headers_len(&m), headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>());
        let d = decode(headers, m.payload.clone(), 1);
        assert!(d.malformed.is_none());
        assert_eq!(d.message, m);
        let plain = Message::new("x");
        assert_eq!(
            encoded_headers_len(&plain),
            encode_headers(&plain).iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        );
    }

    /// A recycled message keeps nothing of the one it held: decoding into
    /// it gives what decoding afresh gives, with or without an id on the wire.
    #[test]
    fn decoding_into_a_used_message_keeps_nothing_of_it() {
        let full = full_message();
        let plain = Message::new("x");
        let mut used = decode(encode_headers(&full), full.payload.clone(), 1).message;
        assert_eq!(used, full);
        let malformed = decode_into(&mut used, encode_headers(&plain), plain.payload.clone(), 2);
        assert!(malformed.is_none());
        assert_eq!(used, decode(encode_headers(&plain), plain.payload.clone(), 2).message);
        assert_eq!((used.id.as_str(), used.attempt), (plain.id.as_str(), 2));
        // From a plain client: no id on the wire, a fresh one (not the old one).
        let before = used.id.clone();
        let malformed = decode_into(&mut used, [(ATTEMPT, "x")], Bytes::from_static(b"raw"), 1);
        assert!(malformed.is_some_and(|m| m.contains(ATTEMPT)));
        assert_ne!(used.id, before);
        assert_eq!((used.attempt, used.payload.as_ref(), used.published_at), (1, &b"raw"[..], SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn publish_time_rides_in_the_id_when_it_can() {
        // A fresh message: its UUIDv7 id carries the millisecond.
        let fresh = Message::new("x");
        let headers = encode_headers(&fresh);
        assert!(headers.iter().all(|(k, _)| k != PUBLISHED_AT), "{headers:?}");
        assert_eq!(decode(headers, fresh.payload.clone(), 1).message, fresh);
        // Any other id, or a time the id does not carry: the header goes.
        let mut custom = Message::new("x");
        custom.id = "order-42".into();
        let mut older = Message::new("x");
        older.published_at = from_millis(to_millis(older.published_at) - 1);
        for m in [custom, older] {
            let headers = encode_headers(&m);
            assert!(headers.iter().any(|(k, _)| k == PUBLISHED_AT), "{headers:?}");
            assert_eq!(decode(headers, m.payload.clone(), 1).message, m);
        }
        // A message with no id on the wire gets a fresh one, not a publish time from it.
        let d = decode(Vec::<(String, String)>::new(), Bytes::new(), 1);
        assert_eq!(d.message.published_at, SystemTime::UNIX_EPOCH, "left for the backend's own time");
    }

    #[test]
    fn decimal_writes_every_width() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 1_795_503_046_950, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }

    #[test]
    fn foreign_message_gets_defaults() {
        let d = decode(vec![("x-custom", "1")], Bytes::from_static(b"raw"), 1);
        assert!(d.malformed.is_none());
        assert_eq!(d.message.attempt, 1);
        assert!(!d.message.id.is_empty());
        assert_eq!(d.message.headers.get("x-custom").map(String::as_str), Some("1"));
    }

    #[test]
    fn redelivery_counts_as_attempt() {
        let d = decode(vec![(ATTEMPT, "2")], Bytes::new(), 3);
        assert_eq!(d.message.attempt, 4);
    }

    #[test]
    fn malformed_metadata_is_reported_not_fatal() {
        let d = decode(vec![(ATTEMPT, "zero"), (PUBLISHED_AT, "yesterday")], Bytes::new(), 1);
        let why = d.malformed.unwrap();
        assert!(why.contains("pb-attempt") && why.contains("pb-published-at"), "{why}");
        assert_eq!(d.message.attempt, 1);
    }
}
