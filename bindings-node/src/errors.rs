//! The core's errors for JavaScript. A rejected promise from an async
//! function carries only a message, so the message is the error as JSON
//! (its code, message, transient flag and the variant's fields, each a
//! value of its own) and the facade makes a `PillarboxError` of it
//! (`lib/errors.js`, `fromNative`). Nothing is parsed back out of prose.

use pillarbox::{Error, ErrorField};
use serde_json::{json, Map, Value};

/// A core error as a napi error the facade reads back.
pub fn to_napi(e: Error) -> napi::Error {
    napi::Error::from_reason(encode(&e).to_string())
}

/// The error as the facade reads it: fields named as JavaScript names
/// them (`message_id` -> `messageId`, a duration `after` -> `afterMs`).
fn encode(e: &Error) -> Value {
    let mut fields = Map::new();
    for (name, value) in e.fields() {
        let (name, value) = match value {
            ErrorField::Text(text) => (camel(name), Value::from(text)),
            ErrorField::Count(n) => (camel(name), Value::from(n)),
            ErrorField::Duration(d) => (format!("{}Ms", camel(name)), Value::from(d.as_secs_f64() * 1000.0)),
            ErrorField::Missing => (camel(name), Value::Null),
        };
        fields.insert(name, value);
    }
    json!({ "code": e.code(), "message": e.to_string(), "transient": e.is_transient(), "fields": fields })
}

/// `message_id` -> `messageId`.
pub fn camel(name: &str) -> String {
    let mut words = name.split('_');
    let mut out = words.next().unwrap_or_default().to_string();
    for word in words {
        let mut letters = word.chars();
        out.extend(letters.next().map(|c| c.to_ascii_uppercase()));
        out.push_str(letters.as_str());
    }
    out
}

/// `INVALID_OPTION` for `name`, worded as the core words it.
pub fn invalid_option(name: &str, reason: impl Into<String>) -> napi::Error {
    to_napi(Error::InvalidOption { name: name.to_string(), reason: reason.into() })
}

/// `INVALID_MESSAGE`, worded as the core words it.
pub fn invalid_message(reason: impl Into<String>) -> napi::Error {
    to_napi(Error::InvalidMessage(reason.into()))
}

/// For `?` on core results.
pub trait OrThrow<T> {
    fn or_throw(self) -> napi::Result<T>;
}

impl<T> OrThrow<T> for pillarbox::Result<T> {
    fn or_throw(self) -> napi::Result<T> {
        self.map_err(to_napi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_as_javascript_names_them() {
        let e = encode(&Error::leases_lost(2));
        assert_eq!(e["code"], "LEASE_LOST");
        assert_eq!(e["fields"], json!({ "messageId": null, "count": 2 }));
        let e = encode(&Error::Timeout { operation: "publish", after: std::time::Duration::from_millis(1500) });
        assert_eq!(e["fields"]["afterMs"], 1500.0);
        assert_eq!(e["transient"], true);
    }
}
