//! The backend's options, from the URL: credentials, vhost, limits, the
//! management port, the consumer timeout and the TLS CA file. Separate:
//! checked once at connect, and never looked at by the operations beyond
//! a few numbers.

use std::time::Duration;

use super::management::Management;
use crate::backends::shared;
use crate::error::{Error, Result};
use crate::url::BrokerUrl;

const KNOWN_PARAMS: &[&str] =
    &["max_message_bytes", "management_port", "stats_delay_ms", "tls_ca_file", "consumer_timeout_ms"];

/// The consumer timeout asked for when none is set: about 24 days, the
/// largest a 32-bit field holds, which RabbitMQ reads as no limit in
/// practice (a worker bounds its handlers with its own `handler_timeout`,
/// and a dead consumer's connection gives its messages back at once).
const NO_CONSUMER_TIMEOUT: i64 = i32::MAX as i64;

/// What a connection is made with, read from its URL.
pub(super) struct Options {
    /// The URL for lapin: without our options.
    pub(super) uri: String,
    /// PEM of a CA to trust instead of the system's, for amqps://.
    pub(super) tls_ca: Option<String>,
    pub(super) vhost: String,
    pub(super) max_message_bytes: usize,
    pub(super) stats_delay: Duration,
    /// `x-consumer-timeout` on every consumer, in ms.
    pub(super) consumer_timeout: i64,
    pub(super) management: Management,
}

impl Options {
    pub(super) fn from_url(url: &BrokerUrl) -> Result<Self> {
        url.reject_unknown_params(KNOWN_PARAMS)?;
        let max_message_bytes = url.max_message_bytes(128 * 1024 * 1024)?;
        let mut parsed = url.as_url()?;
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
        let (user, password) = match url.credentials() {
            Some((user, password)) if !user.is_empty() => (user, password.unwrap_or_default()),
            _ => ("guest".to_string(), "guest".to_string()),
        };
        let vhost = match parsed.path().trim_start_matches('/') {
            "" => "/".to_string(),
            v => percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned(),
        };
        let management_port = url.param_u64("management_port")?.unwrap_or(15672);
        let management_port =
            u16::try_from(management_port).map_err(|_| Error::invalid_option("management_port", "not a port"))?;
        let stats_delay = url.param_millis("stats_delay_ms")?.unwrap_or(Duration::from_secs(5));
        let consumer_timeout = match url.param_millis("consumer_timeout_ms")? {
            None => NO_CONSUMER_TIMEOUT,
            Some(t) if t.is_zero() => return Err(Error::invalid_option("consumer_timeout_ms", "must be at least 1")),
            Some(t) => i64::try_from(t.as_millis()).unwrap_or(NO_CONSUMER_TIMEOUT).min(NO_CONSUMER_TIMEOUT),
        };
        let tls_ca = match url.param("tls_ca_file") {
            None => None,
            Some(_) if url.scheme() != "amqps" => {
                return Err(Error::invalid_option("tls_ca_file", "TLS options need an amqps:// URL"))
            }
            Some(path) => Some(shared::read_option_file("tls_ca_file", path, std::fs::read_to_string)?),
        };
        parsed.set_query(None);
        Ok(Options {
            uri: parsed.to_string(),
            tls_ca,
            vhost,
            max_message_bytes,
            stats_delay,
            consumer_timeout,
            management: Management::new(&host, management_port, &user, &password),
        })
    }
}
