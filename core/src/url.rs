//! Broker URLs: which backend a URL selects, its options, and redaction.
//!
//! Credentials never leave this module in clear: [`BrokerUrl`]'s `Display`
//! and `Debug` print the redacted form, and every error built from a URL uses
//! [`redact`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// Query parameters whose values are secrets, redacted like passwords.
const SECRET_PARAMS: &[&str] = &["password", "sasl_password", "secret", "token", "key_password"];

/// A parsed broker URL. Holds the original (with credentials) privately.
#[derive(Clone)]
pub struct BrokerUrl {
    raw: String,
    scheme: String,
    /// For `sqlite://PATH`: the path exactly as written; for others, unused.
    path: String,
    params: BTreeMap<String, String>,
}

impl BrokerUrl {
    /// Parses `url`. Only the shape is checked here; each backend validates
    /// what it needs.
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::InvalidUrl {
                url: redact(url),
                reason: "expected SCHEME://..., for example memory:// or sqlite://pillarbox.db".into(),
            });
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
            return Err(Error::InvalidUrl { url: redact(url), reason: "malformed scheme".into() });
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut params = BTreeMap::new();
        if let Some(query) = query {
            for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                if k.is_empty() {
                    continue;
                }
                params.insert(k.into_owned(), v.into_owned());
            }
        }
        // Network URLs must parse as real URLs so that a typo is caught here.
        // (Kafka, Redis Cluster and Sentinel URLs, and RabbitMQ URLs of a
        // cluster, list several nodes, `kafka://h1:9092,h2:9092`, which
        // `url` cannot parse: their backends check them themselves.)
        let authority = path.split('/').next().unwrap_or_default();
        let listed = matches!(scheme.as_str(), "amqp" | "amqps") && authority.contains(',');
        if !listed
            && !matches!(
                scheme.as_str(),
                "memory"
                    | "sqlite"
                    | "kafka"
                    | "redis+cluster"
                    | "rediss+cluster"
                    | "redis+sentinel"
                    | "rediss+sentinel"
            )
        {
            url::Url::parse(url).map_err(|e| Error::InvalidUrl { url: redact(url), reason: e.to_string() })?;
        }
        Ok(BrokerUrl { raw: url.to_string(), scheme, path: path.to_string(), params })
    }

    /// The scheme, lower-cased (`sqlite`, `redis`...).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The part between `SCHEME://` and `?`, as written.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full URL including credentials. Only for handing to a client
    /// library; never log or format it.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URL as a `url::Url` (network schemes only).
    pub fn as_url(&self) -> Result<url::Url> {
        url::Url::parse(&self.raw).map_err(|e| Error::InvalidUrl { url: self.redacted(), reason: e.to_string() })
    }

    /// The user and password of `SCHEME://user:password@host`, decoded as
    /// RFC 3986 percent-encoding: `%2B` and `+` are both a plus, `%26` and
    /// `&` both an ampersand (form decoding would turn `+` into a space and
    /// split at `&`). One decoding for every backend that reads them itself.
    pub fn credentials(&self) -> Option<(String, Option<String>)> {
        let authority = self.path.split('/').next().unwrap_or_default();
        let (userinfo, _) = authority.rsplit_once('@')?;
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        Some(match userinfo.split_once(':') {
            Some((user, password)) => (decode(user), Some(decode(password))),
            None => (decode(userinfo), None),
        })
    }

    /// The URL with passwords and secret parameters replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }

    /// A query parameter, as a string.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// All query parameters.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A query parameter parsed as a number, with a clear error when it is not one.
    pub fn param_u64(&self, name: &str) -> Result<Option<u64>> {
        self.param(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| Error::invalid_option(name, format!("expected a whole number, got `{v}`")))
            })
            .transpose()
    }

    /// A query parameter given in milliseconds.
    pub fn param_millis(&self, name: &str) -> Result<Option<Duration>> {
        Ok(self.param_u64(name)?.map(Duration::from_millis))
    }

    /// The `max_message_bytes` option: default 1 MiB, at most `upper` (the
    /// broker's own limit).
    pub fn max_message_bytes(&self, upper: usize) -> Result<usize> {
        let n = self.param_u64("max_message_bytes")?.unwrap_or(1024 * 1024);
        if n == 0 || n > upper as u64 {
            return Err(Error::invalid_option("max_message_bytes", format!("must be between 1 and {upper}")));
        }
        Ok(n as usize)
    }

    /// Fails on any query parameter not in `known`, so a typo never passes silently.
    pub fn reject_unknown_params(&self, known: &[&str]) -> Result<()> {
        for k in self.params.keys() {
            if !known.contains(&k.as_str()) {
                return Err(Error::invalid_option(
                    k.clone(),
                    format!("unknown option for {}:// (known: {})", self.scheme, known.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.redacted())
    }
}

/// Replaces the password of `user:password@host` and the values of secret
/// query parameters with `***`. Works on strings that do not parse, too.
pub fn redact(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    // userinfo is between "://" and the last '@' before the path.
    match before_query.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push_str(&authority[at..]);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_decoded_not_form_decoded() {
        let raw = BrokerUrl::parse("amqp://pb+user:p+ss&w=rd@host:5672/%2f").unwrap();
        assert_eq!(raw.credentials(), Some(("pb+user".into(), Some("p+ss&w=rd".into()))));
        let encoded = BrokerUrl::parse("kafka://pb%2Buser:p%2Bss%26w%3Drd%20x@h1:9092,h2:9092").unwrap();
        assert_eq!(encoded.credentials(), Some(("pb+user".into(), Some("p+ss&w=rd x".into()))));
        let user_only = BrokerUrl::parse("redis://alice@host:6379").unwrap();
        assert_eq!(user_only.credentials(), Some(("alice".into(), None)));
        assert_eq!(BrokerUrl::parse("redis://host:6379").unwrap().credentials(), None);
        // An @ in the path is not userinfo.
        assert_eq!(BrokerUrl::parse("amqp://host/v@host").unwrap().credentials(), None);
    }

    #[test]
    fn redacts_password_and_secret_params() {
        let r = redact("amqps://bob:s3cret@mq.example.com:5671/vhost?heartbeat=10&password=hunter2");
        assert_eq!(r, "amqps://bob:***@mq.example.com:5671/vhost?heartbeat=10&password=***");
        assert!(!r.contains("s3cret") && !r.contains("hunter2"));
        assert_eq!(redact("redis://:pw@localhost/0"), "redis://:***@localhost/0");
        assert_eq!(redact("redis://localhost:6379"), "redis://localhost:6379");
        assert_eq!(redact("not a url at all"), "not a url at all");
    }

    #[test]
    fn debug_and_display_never_show_credentials() {
        let u = BrokerUrl::parse("redis://user:topsecret@127.0.0.1:6379/2").unwrap();
        assert!(!format!("{u}").contains("topsecret"));
        assert!(!format!("{u:?}").contains("topsecret"));
        assert_eq!(u.expose(), "redis://user:topsecret@127.0.0.1:6379/2");
    }

    #[test]
    fn parses_sqlite_paths_and_params() {
        let u = BrokerUrl::parse("sqlite://data/queue.db?max_message_bytes=10").unwrap();
        assert_eq!(u.scheme(), "sqlite");
        assert_eq!(u.path(), "data/queue.db");
        assert_eq!(u.param_u64("max_message_bytes").unwrap(), Some(10));
        let abs = BrokerUrl::parse("sqlite:///tmp/q.db").unwrap();
        assert_eq!(abs.path(), "/tmp/q.db");
    }

    #[test]
    fn malformed_urls_are_clear_errors_without_secrets() {
        let e = BrokerUrl::parse("localhost:6379").unwrap_err();
        assert_eq!(e.code(), "INVALID_URL");
        let e = BrokerUrl::parse("redis://u:pw@[bad").unwrap_err();
        assert_eq!(e.code(), "INVALID_URL");
        assert!(!e.to_string().contains("pw@"), "{e}");
        let u = BrokerUrl::parse("sqlite://x.db?bogus=1").unwrap();
        let e = u.reject_unknown_params(&["max_message_bytes"]).unwrap_err();
        assert!(e.to_string().contains("bogus"));
        let u = BrokerUrl::parse("sqlite://x.db?max_message_bytes=lots").unwrap();
        assert_eq!(u.param_u64("max_message_bytes").unwrap_err().code(), "INVALID_OPTION");
    }
}
