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
    /// A URL for lapin per node (`amqp://u:p@h1:5672,h2:5673/vhost` names
    /// two), without our options.
    pub(super) uris: Vec<String>,
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
        let uris = node_uris(url)?;
        let parsed =
            url::Url::parse(&uris[0]).map_err(|e| Error::InvalidUrl { url: url.redacted(), reason: e.to_string() })?;
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
        Ok(Options {
            uris,
            tls_ca,
            vhost,
            max_message_bytes,
            stats_delay,
            consumer_timeout,
            management: Management::new(&host, management_port, &user, &password),
        })
    }
}

/// One URL per node of `SCHEME://[user:password@]h1:p1,h2:p2[/vhost]`
/// (one for a URL of one host), each checked, without the query.
fn node_uris(url: &BrokerUrl) -> Result<Vec<String>> {
    let invalid = |reason: String| Error::InvalidUrl { url: url.redacted(), reason };
    let (authority, rest) = match url.path().split_once('/') {
        Some((authority, rest)) => (authority, format!("/{rest}")),
        None => (url.path(), String::new()),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let uris: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .map(|host| {
            if host.is_empty() {
                return Err(invalid("an empty host in the list".into()));
            }
            let uri = format!("{}://{userinfo}{host}{rest}", url.scheme());
            let parsed = url::Url::parse(&uri).map_err(|e| invalid(format!("`{host}`: {e}")))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(invalid(format!("`{host}` is not HOST[:PORT]")));
            }
            Ok(uri)
        })
        .collect::<Result<_>>()?;
    Ok(uris)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_may_name_several_nodes() {
        let url = BrokerUrl::parse("amqp://u:p@h1:5672,h2:5673/%2f?stats_delay_ms=100").unwrap();
        assert_eq!(node_uris(&url).unwrap(), vec!["amqp://u:p@h1:5672/%2f", "amqp://u:p@h2:5673/%2f"]);
        let one = BrokerUrl::parse("amqps://rabbit.example/prod").unwrap();
        assert_eq!(node_uris(&one).unwrap(), vec!["amqps://rabbit.example/prod"]);
        for bad in ["amqp://h1:5672,,h2/", "amqp://h1:x,h2/", "amqp://h1,:5672/"] {
            assert!(matches!(node_uris(&BrokerUrl::parse(bad).unwrap()), Err(Error::InvalidUrl { .. })), "{bad}");
        }
        let options = Options::from_url(&url).unwrap();
        assert_eq!(options.vhost, "/");
    }
}
