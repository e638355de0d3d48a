//! What the backends share, each piece the same behaviour wherever it is
//! used: the closed-handle check, the topic and group name checks, the
//! delay-level lookup (each backend keeps its own ladder), the
//! `published_at` fallback after decoding, and reading a file a URL
//! option names (the TLS material).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::message::Message;

/// `Error::Closed` once the handle's `close` has run.
pub(crate) fn check_open(closed: &AtomicBool) -> Result<()> {
    if closed.load(Ordering::Acquire) {
        Err(Error::Closed)
    } else {
        Ok(())
    }
}

/// A topic's and a group's names are valid (Kafka adds its own limits).
#[cfg(any(feature = "embedded", feature = "redis", feature = "amqp"))]
pub(crate) fn check_names(topic: &str, group: &str) -> Result<()> {
    crate::message::validate_name("topic", topic)?;
    crate::message::validate_name("group", group)
}

/// The longest of `levels` (ms, ascending) not beyond `remaining` ms, if any.
#[cfg(any(feature = "amqp", feature = "kafka"))]
pub(crate) fn longest_level(levels: &[u64], remaining: u64) -> Option<u64> {
    levels.iter().rev().copied().find(|l| *l <= remaining)
}

/// A decoded message without a publish time (a foreign producer's, say)
/// takes the backend's own, if it has one: `fallback` is asked only then.
pub(crate) fn fill_published_at(message: &mut Message, fallback: impl FnOnce() -> Option<SystemTime>) {
    if message.published_at == SystemTime::UNIX_EPOCH {
        if let Some(t) = fallback() {
            message.published_at = t;
        }
    }
}

/// Reads the file at `path`, named by the URL option `name`, with `read`;
/// a file that cannot be read is that option's error.
#[cfg(any(feature = "redis", feature = "amqp", feature = "kafka"))]
pub(crate) fn read_option_file<'a, T>(
    name: &str,
    path: &'a str,
    read: impl FnOnce(&'a str) -> std::io::Result<T>,
) -> Result<T> {
    read(path).map_err(|e| Error::invalid_option(name, format!("cannot read `{path}`: {e}")))
}
