//! The one error type of the core. The bindings map it to a Python exception
//! hierarchy and to JavaScript errors, using [`Error::code`] as the stable key.
//!
//! No variant ever carries a URL with its password: URLs are redacted before
//! they are put into an error (see [`crate::url::redact`]).

use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Pillarbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be parsed, or names something it cannot.
    #[error("invalid broker URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with its credentials redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No backend answers to this URL scheme.
    #[error("unknown URL scheme `{scheme}` (known: memory, sqlite, redis, rediss, amqp, amqps, kafka)")]
    UnknownScheme {
        /// The scheme as given.
        scheme: String,
    },

    /// The backend exists but this build of Pillarbox was compiled without it.
    #[error("the `{scheme}://` backend is not compiled in: enable the cargo feature `{feature}`")]
    BackendNotEnabled {
        /// The scheme as given.
        scheme: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },

    /// An option (from the URL query or from code) has a bad value.
    #[error("invalid option `{name}`: {reason}")]
    InvalidOption {
        /// The option's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The backend cannot do what was asked (see [`crate::Capabilities`]).
    #[error("the {backend} backend does not support {capability}")]
    Unsupported {
        /// Backend name (`sqlite`, `redis`...).
        backend: &'static str,
        /// What was asked for.
        capability: &'static str,
    },

    /// A message is larger than the backend accepts. Nothing was published.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes; nothing was published")]
    MessageTooLarge {
        /// Encoded size of the message (payload plus metadata).
        size: usize,
        /// The backend's limit.
        limit: usize,
    },

    /// The topic holds as many unconsumed messages as its configured bound
    /// allows; nothing was published. Publish again once consumers catch up.
    #[error("topic `{topic}` is full ({limit} messages not yet consumed); nothing was published")]
    QueueFull {
        /// The topic.
        topic: String,
        /// The configured bound.
        limit: u64,
    },

    /// A message or a name is not acceptable (empty topic, reserved header...).
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// The broker could not be reached, or the connection was lost.
    #[error("cannot reach the {backend} broker at {url}: {reason}")]
    Connect {
        /// Backend name.
        backend: &'static str,
        /// The URL with its credentials redacted.
        url: String,
        /// The underlying cause (never contains credentials).
        reason: String,
    },

    /// The broker answered with an error.
    #[error("{backend} backend error: {reason}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// The underlying cause (never contains credentials).
        reason: String,
    },

    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// How long we waited.
        after: Duration,
    },

    /// The delivery's lease was lost (it expired and the message went to
    /// another consumer, or the channel it came on closed); the ack, retry
    /// or dead-letter was not applied and the message will be delivered again.
    #[error("{}", lease_lost_text(message_id.as_deref(), *count))]
    LeaseLost {
        /// The message, when one is known (a Redis ack of a batch says how
        /// many of it were settled already, not which).
        message_id: Option<String>,
        /// How many messages lost their lease.
        count: usize,
    },

    /// `Worker::run` was called while the worker was running already.
    #[error("this worker is already running: one run() at a time (it may run again once that one returns)")]
    AlreadyRunning,

    /// The broker handle or worker was closed.
    #[error("closed")]
    Closed,
}

impl Error {
    /// A stable, machine-readable code: the key the Python exception classes
    /// and the JavaScript `error.code` are derived from. Never changes for a
    /// given variant.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidUrl { .. } => "INVALID_URL",
            Error::UnknownScheme { .. } => "UNKNOWN_SCHEME",
            Error::BackendNotEnabled { .. } => "BACKEND_NOT_ENABLED",
            Error::InvalidOption { .. } => "INVALID_OPTION",
            Error::Unsupported { .. } => "UNSUPPORTED",
            Error::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
            Error::QueueFull { .. } => "QUEUE_FULL",
            Error::InvalidMessage(_) => "INVALID_MESSAGE",
            Error::Connect { .. } => "CONNECT",
            Error::Backend { .. } => "BACKEND",
            Error::Timeout { .. } => "TIMEOUT",
            Error::LeaseLost { .. } => "LEASE_LOST",
            Error::AlreadyRunning => "ALREADY_RUNNING",
            Error::Closed => "CLOSED",
        }
    }

    /// Whether trying the same operation again later may succeed
    /// (a lost connection, a timeout) as opposed to a caller error.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Backend { .. } | Error::Timeout { .. } | Error::QueueFull { .. })
    }

    /// Every code [`Error::code`] gives, in the order of the variants: the
    /// bindings' tests check that each has its exception class.
    pub const CODES: [&'static str; 14] = [
        "INVALID_URL",
        "UNKNOWN_SCHEME",
        "BACKEND_NOT_ENABLED",
        "INVALID_OPTION",
        "UNSUPPORTED",
        "MESSAGE_TOO_LARGE",
        "QUEUE_FULL",
        "INVALID_MESSAGE",
        "CONNECT",
        "BACKEND",
        "TIMEOUT",
        "LEASE_LOST",
        "CLOSED",
        "ALREADY_RUNNING",
    ];

    /// The variant's fields by name, as the bindings expose them on their
    /// exceptions (`error.size` in Python, `error.size` in JavaScript), so
    /// that no binding parses them back out of the message. A new variant
    /// or field is a compile error here, not a field silently lost.
    pub fn fields(&self) -> Vec<(&'static str, ErrorField)> {
        use ErrorField::{Count, Duration as Took, Missing, Text};
        let text = |s: &str| Text(s.to_string());
        match self {
            Error::InvalidUrl { url, reason } => vec![("url", text(url)), ("reason", text(reason))],
            Error::UnknownScheme { scheme } => vec![("scheme", text(scheme))],
            Error::BackendNotEnabled { scheme, feature } => vec![("scheme", text(scheme)), ("feature", text(feature))],
            // `option`, not `name`: a JavaScript error's `name` is its class's.
            Error::InvalidOption { name, reason } => vec![("option", text(name)), ("reason", text(reason))],
            Error::Unsupported { backend, capability } => {
                vec![("backend", text(backend)), ("capability", text(capability))]
            }
            Error::MessageTooLarge { size, limit } => {
                vec![("size", Count(*size as u64)), ("limit", Count(*limit as u64))]
            }
            Error::QueueFull { topic, limit } => vec![("topic", text(topic)), ("limit", Count(*limit))],
            Error::InvalidMessage(reason) => vec![("reason", text(reason))],
            Error::Connect { backend, url, reason } => {
                vec![("backend", text(backend)), ("url", text(url)), ("reason", text(reason))]
            }
            Error::Backend { backend, reason } => vec![("backend", text(backend)), ("reason", text(reason))],
            Error::Timeout { operation, after } => vec![("operation", text(operation)), ("after", Took(*after))],
            Error::LeaseLost { message_id, count } => {
                vec![("message_id", message_id.as_deref().map_or(Missing, text)), ("count", Count(*count as u64))]
            }
            Error::AlreadyRunning | Error::Closed => vec![],
        }
    }

    pub(crate) fn invalid_option(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption { name: name.into(), reason: reason.into() }
    }

    /// The lease on message `id` was lost.
    pub fn lease_lost(id: &str) -> Self {
        Error::LeaseLost { message_id: Some(id.to_string()), count: 1 }
    }

    /// The leases on `count` messages, not known one by one, were lost.
    pub fn leases_lost(count: usize) -> Self {
        Error::LeaseLost { message_id: None, count }
    }
}

/// The value of one of an error's fields (see [`Error::fields`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorField {
    /// A name, a reason, a redacted URL.
    Text(String),
    /// A size, a limit, a count.
    Count(u64),
    /// How long something took (Python shows it as a `timedelta`,
    /// JavaScript in milliseconds under the field's name with `Ms`).
    Duration(Duration),
    /// An optional field that is not set (`None`, `null`).
    Missing,
}

fn lease_lost_text(message_id: Option<&str>, count: usize) -> String {
    match message_id {
        Some(id) => format!("the lease on message {id} was lost; it will be delivered again"),
        None => {
            format!("the leases on {count} of the messages settled together were lost; they will be delivered again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_pinned_and_listed_in_the_readme() {
        let all = [
            Error::InvalidUrl { url: String::new(), reason: String::new() },
            Error::UnknownScheme { scheme: String::new() },
            Error::BackendNotEnabled { scheme: String::new(), feature: "x" },
            Error::invalid_option("a", "b"),
            Error::Unsupported { backend: "x", capability: "y" },
            Error::MessageTooLarge { size: 2, limit: 1 },
            Error::QueueFull { topic: String::new(), limit: 1 },
            Error::InvalidMessage(String::new()),
            Error::Connect { backend: "x", url: String::new(), reason: String::new() },
            Error::Backend { backend: "x", reason: String::new() },
            Error::Timeout { operation: "x", after: Duration::ZERO },
            Error::lease_lost("m"),
            Error::Closed,
            Error::AlreadyRunning,
        ];
        // Promised never to change: scripts, the packages' exception classes
        // and the README's list depend on these strings.
        let pinned = [
            "INVALID_URL",
            "UNKNOWN_SCHEME",
            "BACKEND_NOT_ENABLED",
            "INVALID_OPTION",
            "UNSUPPORTED",
            "MESSAGE_TOO_LARGE",
            "QUEUE_FULL",
            "INVALID_MESSAGE",
            "CONNECT",
            "BACKEND",
            "TIMEOUT",
            "LEASE_LOST",
            "CLOSED",
            "ALREADY_RUNNING",
        ];
        assert_eq!(Error::CODES, pinned);
        let codes: Vec<_> = all.iter().map(Error::code).collect();
        assert_eq!(codes, pinned);
        let readme = include_str!("../../README.md");
        for code in pinned {
            assert!(readme.contains(&format!("`{code}`")), "the README's list of error codes lacks {code}");
        }
    }

    #[test]
    fn fields_carry_what_the_message_says() {
        let e = Error::MessageTooLarge { size: 2_000, limit: 1_000 };
        assert_eq!(e.fields(), vec![("size", ErrorField::Count(2_000)), ("limit", ErrorField::Count(1_000))]);
        let e = Error::invalid_option("lease", "must be at least 100 ms");
        assert_eq!(e.fields()[0], ("option", ErrorField::Text("lease".into())));
        assert_eq!(Error::leases_lost(3).fields()[0], ("message_id", ErrorField::Missing));
        assert!(Error::Closed.fields().is_empty());
    }
}
