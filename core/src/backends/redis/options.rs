//! The backend's options, from the URL's query: limits, timeouts and TLS
//! material. Separate: checked once at connect, and never looked at by
//! the operations beyond a few numbers.

use std::time::Duration;

use crate::backends::shared;
use crate::error::{Error, Result};
use crate::url::BrokerUrl;

const KNOWN_PARAMS: &[&str] = &[
    "max_message_bytes",
    "max_len",
    "response_timeout_ms",
    "connect_timeout_ms",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "wait_replicas",
    "wait_timeout_ms",
];

#[derive(Clone, Debug)]
pub(super) struct Options {
    pub(super) max_message_bytes: usize,
    pub(super) max_len: Option<u64>,
    pub(super) response_timeout: Duration,
    pub(super) connect_timeout: Duration,
    /// A publish waits until this many replicas have it (`WAIT`), so that a
    /// failover cannot lose it; `None`: Redis's asynchronous replication.
    pub(super) wait_replicas: Option<u64>,
    pub(super) wait_timeout: Duration,
}

impl Options {
    pub(super) fn from_url(url: &BrokerUrl) -> Result<Self> {
        url.reject_unknown_params(KNOWN_PARAMS)?;
        let max_message_bytes = url.max_message_bytes(512 * 1024 * 1024)?;
        let max_len = url.param_u64("max_len")?;
        if max_len == Some(0) {
            return Err(Error::invalid_option("max_len", "must be at least 1"));
        }
        let wait_replicas = url.param_u64("wait_replicas")?.filter(|n| *n > 0);
        let wait_timeout = url.param_millis("wait_timeout_ms")?.unwrap_or(Duration::from_secs(1));
        if wait_timeout.is_zero() {
            // WAIT 0 would wait forever.
            return Err(Error::invalid_option("wait_timeout_ms", "must be at least 1"));
        }
        Ok(Options {
            wait_replicas,
            wait_timeout,
            max_message_bytes,
            max_len,
            response_timeout: url.param_millis("response_timeout_ms")?.unwrap_or(Duration::from_secs(10)),
            connect_timeout: url.param_millis("connect_timeout_ms")?.unwrap_or(Duration::from_secs(5)),
        })
    }
}

/// TLS material from `tls_ca_file` (trust this CA instead of the system's)
/// and `tls_cert_file` + `tls_key_file` (a client certificate), for rediss://.
pub(super) fn tls_certificates(url: &BrokerUrl) -> Result<Option<redis::TlsCertificates>> {
    let read = |name: &str| -> Result<Option<Vec<u8>>> {
        url.param(name).map(|path| shared::read_option_file(name, path, std::fs::read)).transpose()
    };
    let (ca, cert, key) = (read("tls_ca_file")?, read("tls_cert_file")?, read("tls_key_file")?);
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    if url.scheme() != "rediss" {
        return Err(Error::invalid_option("tls_ca_file", "TLS options need a rediss:// URL"));
    }
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
        (None, None) => None,
        _ => return Err(Error::invalid_option("tls_cert_file", "tls_cert_file and tls_key_file go together")),
    };
    Ok(Some(redis::TlsCertificates { client_tls, root_cert: ca }))
}
