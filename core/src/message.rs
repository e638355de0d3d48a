//! The message model: payload bytes plus metadata.
//!
//! How the metadata is named on the wire lives in [`crate::wire`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::wire;

/// A message: raw payload bytes and metadata.
///
/// The payload is a [`Bytes`], so cloning a message or handing it through
/// the runtime never copies the payload.
///
/// Serialized (for JSON output and the bindings), the payload is bytes and
/// times are milliseconds since the Unix epoch, the precision every wire
/// format carries.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Message {
    /// Unique, time-ordered id (UUIDv7), set at creation.
    pub id: String,
    /// Partition / routing key; per-key ordering where the backend offers it.
    pub key: Option<String>,
    /// Handler effects run once per idempotency key (per group).
    pub idempotency_key: Option<String>,
    /// MIME type of the payload, e.g. `application/json`.
    pub content_type: Option<String>,
    /// Application headers (string to string). Names starting with `pb-` are reserved.
    pub headers: BTreeMap<String, String>,
    /// 1 on first delivery, +1 on each retry or redelivery.
    pub attempt: u32,
    /// When the producer published it.
    #[serde(with = "millis")]
    pub published_at: SystemTime,
    /// Not delivered before this time (delayed publish or waiting retry).
    #[serde(with = "millis::option")]
    pub deliver_at: Option<SystemTime>,
    /// W3C trace context (`traceparent`), passed through untouched.
    pub traceparent: Option<String>,
    /// W3C `tracestate`, passed through untouched.
    pub tracestate: Option<String>,
    /// The schedule that published it, for a scheduled message.
    pub schedule: Option<String>,
    /// The tick it was published for, for a scheduled message: when it
    /// was meant to run, however late it was published or is handled.
    #[serde(with = "millis::option")]
    pub scheduled_for: Option<SystemTime>,
    /// What went wrong on earlier attempts, if any.
    pub failures: Option<FailureHistory>,
    /// The payload.
    #[serde(serialize_with = "as_bytes")]
    pub payload: Bytes,
}

fn as_bytes<S: serde::Serializer>(payload: &Bytes, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_bytes(payload)
}

/// What went wrong on the earlier attempts of a message, carried with it
/// through retries so that a dead letter can tell the whole story.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureHistory {
    /// When the first attempt failed.
    #[serde(with = "millis")]
    pub first_failed_at: SystemTime,
    /// When the latest attempt failed.
    #[serde(with = "millis")]
    pub last_failed_at: SystemTime,
    /// Kind (class / type name) of the latest error.
    pub last_error_kind: String,
    /// Message of the latest error.
    pub last_error: String,
}

impl Message {
    /// A new message with a fresh id, attempt 1 and `published_at` now.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        // One reading of the clock for both: the id then carries the
        // publish time, which spares the wire a header (see `wire`).
        let now = now_millis();
        Message {
            id: message_id_at(to_millis(now)),
            key: None,
            idempotency_key: None,
            content_type: None,
            headers: BTreeMap::new(),
            attempt: 1,
            published_at: now,
            deliver_at: None,
            traceparent: None,
            tracestate: None,
            schedule: None,
            scheduled_for: None,
            failures: None,
            payload: payload.into(),
        }
    }

    /// A message whose payload is `value` as JSON, with content type `application/json`.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let payload =
            serde_json::to_vec(value).map_err(|e| Error::InvalidMessage(format!("cannot encode JSON: {e}")))?;
        Ok(Message::new(payload).with_content_type("application/json"))
    }

    /// Parses the payload as JSON.
    pub fn payload_json<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Error::InvalidMessage(format!("payload is not the expected JSON: {e}")))
    }

    /// Sets the partition / routing key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Adds an application header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Delays delivery by `delay` from now.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.deliver_at = Some(truncate_to_millis(SystemTime::now() + delay));
        self
    }

    /// Delays delivery until `at`.
    pub fn with_deliver_at(mut self, at: SystemTime) -> Self {
        self.deliver_at = Some(truncate_to_millis(at));
        self
    }

    /// Sets the W3C `traceparent`.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Sets the W3C `tracestate`.
    pub fn with_tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.tracestate = Some(tracestate.into());
        self
    }

    /// Size on the wire: payload plus every metadata name and value.
    pub fn encoded_size(&self) -> usize {
        self.payload.len() + wire::encoded_headers_len(self)
    }

    /// Checks what a producer must not get wrong. Called by every publish.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty() {
            return Err(Error::InvalidMessage("empty message id".into()));
        }
        if self.attempt == 0 {
            return Err(Error::InvalidMessage("attempt numbers start at 1".into()));
        }
        for name in self.headers.keys() {
            if name.is_empty() {
                return Err(Error::InvalidMessage("empty header name".into()));
            }
            if wire::is_reserved(name) {
                return Err(Error::InvalidMessage(format!(
                    "header `{name}` is reserved for Pillarbox metadata; use the message's fields instead"
                )));
            }
        }
        Ok(())
    }

    /// When the message becomes deliverable.
    pub fn due_at(&self) -> SystemTime {
        self.deliver_at.unwrap_or(self.published_at)
    }
}

/// A new unique, time-ordered message id: a UUIDv7 whose 12-bit `rand_a`
/// field is a per-process sequence, so ids made in one process sort in the
/// order they were made, and whose 62 random bits come from a fast
/// per-thread generator (ids need uniqueness, not secrecy; the OS random
/// source costs a system call per id).
pub fn new_message_id() -> String {
    message_id_at(to_millis(SystemTime::now()))
}

/// [`new_message_id`] for the millisecond `now`. More than 4,096 ids in one
/// millisecond run the id's time ahead of `now` rather than repeat one.
fn message_id_at(now: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let stamp = loop {
        // Millisecond in the high bits, sequence in the low 12.
        let next = if prev >> 12 >= now { prev + 1 } else { now << 12 };
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(actual) => prev = actual,
        }
    };
    let (ms, seq) = (stamp >> 12, stamp & 0xfff);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (seq >> 8) as u8;
    bytes[7] = seq as u8;
    bytes[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// The creation time (ms since the epoch) of a UUIDv7 id in its canonical
/// text form; `None` for any other id.
pub(crate) fn uuid7_millis(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    let canonical = b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'7'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B');
    if !canonical {
        return None;
    }
    let high = u64::from_str_radix(id.get(..8)?, 16).ok()?;
    let low = u64::from_str_radix(id.get(9..13)?, 16).ok()?;
    Some(high << 16 | low)
}

/// Now, at millisecond precision: the precision every wire format carries.
pub fn now_millis() -> SystemTime {
    truncate_to_millis(SystemTime::now())
}

pub(crate) fn truncate_to_millis(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(to_millis(t))
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Times as milliseconds since the Unix epoch, in serialized forms
/// (`#[serde(with = "millis")]`).
pub(crate) mod millis {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(super::to_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(deserializer).map(super::from_millis)
    }

    /// The same for an optional time.
    pub mod option {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => serializer.serialize_some(&super::super::to_millis(*t)),
                None => serializer.serialize_none(),
            }
        }

        #[allow(dead_code)]
        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SystemTime>, D::Error> {
            Ok(Option::<u64>::deserialize(deserializer)?.map(super::super::from_millis))
        }
    }
}

/// Checks a topic or group name: non-empty, at most 200 bytes, and only
/// characters that every backend accepts in its own names.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidMessage(format!(
            "invalid {kind} name `{name}`: use 1 to 200 characters among A-Z a-z 0-9 - _ ."
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let ids: Vec<String> = (0..10_000).map(|_| new_message_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not strictly increasing");
        let parsed = uuid::Uuid::parse_str(&ids[0]).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        let ms = parsed.get_timestamp().unwrap().to_unix();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(ms.0.abs_diff(now) < 5, "timestamp {ms:?} is not now");
    }

    #[test]
    fn uuid7_ids_tell_their_millisecond() {
        let before = to_millis(SystemTime::now());
        let ms = uuid7_millis(&new_message_id()).expect("a UUIDv7");
        assert!(ms >= before && ms <= to_millis(SystemTime::now()) + 1, "{before} {ms}");
        assert_eq!(uuid7_millis("0190a8c4-5e1f-7abc-8def-0123456789ab"), Some(0x0190_a8c4_5e1f));
        for other in ["order-42", "0190a8c4-5e1f-4abc-8def-0123456789ab", "0190a8c4-5e1f-7abc-cdef-0123456789ab", ""] {
            assert_eq!(uuid7_millis(other), None, "{other}");
        }
        let m = Message::new("x");
        assert_eq!(uuid7_millis(&m.id), Some(to_millis(m.published_at)));
    }

    #[test]
    fn reserved_headers_are_refused() {
        let m = Message::new("x").with_header("pb-attempt", "3");
        assert_eq!(m.validate().unwrap_err().code(), "INVALID_MESSAGE");
        assert!(Message::new("x").with_header("tenant", "a").validate().is_ok());
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("topic", "orders.v1_eu-west").is_ok());
        assert!(validate_name("topic", "").is_err());
        assert!(validate_name("topic", "a b").is_err());
        assert!(validate_name("group", &"x".repeat(201)).is_err());
    }

    #[test]
    fn a_message_serializes_with_its_payload_as_bytes_and_times_in_milliseconds() {
        let mut m =
            Message::new(vec![0u8, 255]).with_tracestate("vendor=1").with_deliver_at(from_millis(1_700_000_000_123));
        m.failures = Some(FailureHistory {
            first_failed_at: from_millis(5),
            last_failed_at: from_millis(6),
            last_error_kind: "ValueError".into(),
            last_error: "boom".into(),
        });
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["payload"], serde_json::json!([0, 255]));
        assert_eq!(v["published_at"], serde_json::json!(to_millis(m.published_at)));
        assert_eq!(v["deliver_at"], serde_json::json!(1_700_000_000_123u64));
        assert_eq!(v["tracestate"], "vendor=1");
        assert_eq!(v["failures"]["first_failed_at"], 5);
        assert_eq!(v["id"], m.id.as_str());
    }

    #[test]
    fn json_round_trip() {
        let m = Message::json(&serde_json::json!({"n": 1})).unwrap();
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        let v: serde_json::Value = m.payload_json().unwrap();
        assert_eq!(v["n"], 1);
    }
}
