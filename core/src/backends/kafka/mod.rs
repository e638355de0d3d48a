//! The Kafka backend (`kafka://host:port[,host:port...]`) over rdkafka.
//!
//! Topics, per topic `T` and group `G` (`G'` is `G` with `_` written `__`
//! and `.` written `_-`, so that `T.G'` can always be split back):
//!
//! | topic | what |
//! |---|---|
//! | `T` | the topic (`partitions` partitions); group `G` reads it as the Kafka consumer group `T.G'` |
//! | `T.delay.L` | delayed publishes, one topic per delay level `L` (ms), read by every group |
//! | `T.G'.retry.L` | group `G`'s waiting retries (and redriven or handed-back messages at `L` = 0) |
//! | `T.G'.dlq` | group `G`'s dead letters, compacted, keyed by message id |
//!
//! A group's consumers subscribe to `T`, every `T.delay.L` and every
//! `T.G'.retry.L`. A delay or retry topic holds messages in the order they
//! were put there, each due at least `L` ms later, so only its head needs
//! looking at: when the head is not due, that one partition is paused and
//! resumed when it is (the main topic never waits). A head that has waited
//! its level's time and is still not due moves on to the group's retry
//! topic of the level that fits what remains (a hop is not an attempt).
//!
//! Offsets are committed by hand, per partition, up to the lowest message
//! not yet settled, only once the ack, the retry copy or the dead letter is
//! durable. The commit metadata also records how far the group's
//! consumers have handed messages out, and how often: a consumer that dies
//! mid-message leaves that record behind, so the next delivery counts as a
//! new attempt and a crash loop is caught, as on every other backend.
//! A partition taken away in a rebalance is given up only once the messages
//! handed out from it are settled (bounded by `revoke_wait_ms`), so joining
//! and leaving consumers cause no duplicates.
//!
//! Options (URL query): `partitions` (of a new topic, default 3),
//! `retry_partitions` (of delay and retry topics, default 1),
//! `max_message_bytes` (default 1,000,000, the broker's default limit),
//! `delivery_timeout_ms` (how long a publish may keep trying, default 30000),
//! `session_timeout_ms` (how soon a dead consumer's partitions move, default
//! 10000), `max_poll_interval_ms` (default 300000), `revoke_wait_ms`
//! (default 10000), `linger_ms` (default 0: a publish returns once Kafka has
//! every record, so waiting to fill a batch only delays the caller; records
//! queued while a request is in flight still go together), `connect_timeout_ms` (default
//! 5000), `record_deliveries` (`before`, the default: a received batch is
//! handed out once the record of its delivery is committed, so even a crash
//! at once counts as an attempt; `async`: recorded in the background, faster,
//! but a consumer dying within milliseconds may leave no record),
//! `assignment` (`roundrobin`, the default: every topic's partitions spread
//! evenly over the group's consumers; `range`; `cooperative-sticky`: joins
//! and leaves move only some partitions, but it balances partition counts
//! over all the subscribed topics together, so a newcomer may get only
//! retry and delay partitions while the main topic's stay elsewhere); security: `security_protocol` (`plaintext`, `ssl`,
//! `sasl_plaintext`, `sasl_ssl`; default `plaintext`, or `sasl_plaintext`
//! when the URL has a user), `sasl_mechanism` (`PLAIN`, `SCRAM-SHA-256`,
//! `SCRAM-SHA-512`; default `PLAIN`), user and password from the URL,
//! `tls_ca_file`, `tls_cert_file`, `tls_key_file` (PEM); replication of the
//! topics it creates: `replication_factor` (default 3 on a cluster of three
//! brokers or more, else one per broker) and `min_insync_replicas` (default
//! 2 with 3 replicas or more, else 1).

mod broker;
mod dead_letters;
mod inspect;
mod outstanding;
mod publish;
mod reader;
mod schedules;
mod settle;
mod topology;

use std::time::Duration;

pub use broker::KafkaBroker;
use rdkafka::ClientConfig;

use crate::backends::shared;
use crate::error::{Error, Result};
use crate::url::BrokerUrl;

pub(crate) const BACKEND: &str = "kafka";

/// Delay levels (ms) of the delay and retry topics.
const LEVELS: [u64; 8] = [0, 10, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000];

/// The longest level not beyond `remaining` ms.
fn level_for(remaining: u64) -> u64 {
    shared::longest_level(&LEVELS, remaining).unwrap_or(0)
}

/// Kafka's limit on topic names.
const MAX_TOPIC_NAME: usize = 249;

fn err(e: rdkafka::error::KafkaError) -> Error {
    Error::Backend { backend: BACKEND, reason: e.to_string() }
}

/// A record's headers as wire name/value pairs (values read as UTF-8),
/// borrowed from the client's buffers: for [`wire::decode`], which copies
/// only what the message keeps.
fn header_pairs<M: rdkafka::Message>(m: &M) -> impl Iterator<Item = (&str, std::borrow::Cow<'_, str>)> {
    use rdkafka::message::Headers;
    m.headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value.map(String::from_utf8_lossy).unwrap_or_default()))
}

/// A record's headers as owned wire name/value pairs.
fn header_fields<M: rdkafka::Message>(m: &M) -> Vec<(String, String)> {
    header_pairs(m).map(|(name, value)| (name.to_string(), value.into_owned())).collect()
}

/// A group name made safe to sit between dots in a topic name.
fn encode_group(group: &str) -> String {
    group.replace('_', "__").replace('.', "_-")
}

/// Reverses [`encode_group`]; `None` when `s` is not an encoded group.
fn decode_group(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '.' => return None,
            '_' => match chars.next() {
                Some('_') => out.push('_'),
                Some('-') => out.push('.'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The topics behind one topic, or one group of it.
pub(crate) fn delay_topic(topic: &str, level: u64) -> String {
    format!("{topic}.delay.{level}")
}
pub(crate) fn retry_topic(topic: &str, group: &str, level: u64) -> String {
    format!("{topic}.{}.retry.{level}", encode_group(group))
}
/// The Kafka consumer group behind group `G` of topic `T`: `T.G'`, so that
/// a rebalance on one topic never stalls another topic's consumers.
pub(crate) fn consumer_group(topic: &str, group: &str) -> String {
    format!("{topic}.{}", encode_group(group))
}
pub(crate) fn dlq_topic(topic: &str, group: &str) -> String {
    format!("{topic}.{}.dlq", encode_group(group))
}

/// Rejects topic names that would collide with the topics Pillarbox derives.
fn check_topic(topic: &str) -> Result<()> {
    crate::message::validate_name("topic", topic)?;
    let level_suffix = |kind: &str| {
        topic.rsplit_once('.').is_some_and(|(head, level)| {
            level.chars().all(|c| c.is_ascii_digit()) && head.ends_with(&format!(".{kind}"))
        })
    };
    if topic.ends_with(".dlq") || level_suffix("delay") || level_suffix("retry") {
        return Err(Error::InvalidMessage(format!(
            "topic name `{topic}` is reserved on Kafka: names ending in .dlq, .delay.N or .retry.N are Pillarbox's own"
        )));
    }
    Ok(())
}

/// Checks that the derived topic names of a group fit Kafka's limit.
fn check_group(topic: &str, group: &str) -> Result<()> {
    crate::message::validate_name("group", group)?;
    let longest = retry_topic(topic, group, LEVELS[LEVELS.len() - 1]);
    if longest.len() > MAX_TOPIC_NAME {
        return Err(Error::InvalidMessage(format!(
            "topic and group names too long for Kafka: `{longest}` would exceed {MAX_TOPIC_NAME} characters"
        )));
    }
    Ok(())
}

const KNOWN_PARAMS: &[&str] = &[
    "partitions",
    "retry_partitions",
    "max_message_bytes",
    "delivery_timeout_ms",
    "session_timeout_ms",
    "max_poll_interval_ms",
    "revoke_wait_ms",
    "linger_ms",
    "connect_timeout_ms",
    "record_deliveries",
    "assignment",
    "security_protocol",
    "sasl_mechanism",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "replication_factor",
    "min_insync_replicas",
];

/// Connection settings and options from a `kafka://` URL.
#[derive(Clone)]
pub(crate) struct Options {
    bootstrap: String,
    /// librdkafka settings shared by every client (security, timeouts).
    common: Vec<(&'static str, String)>,
    pub partitions: i32,
    pub retry_partitions: i32,
    pub max_message_bytes: usize,
    pub delivery_timeout: Duration,
    pub session_timeout: Duration,
    pub max_poll_interval: Duration,
    pub revoke_wait: Duration,
    pub linger: Duration,
    pub connect_timeout: Duration,
    /// `record_deliveries=before` (default): a received batch is handed out
    /// only once its delivery record is committed; `async`: in the background.
    pub record_deliveries_first: bool,
    /// librdkafka's `partition.assignment.strategy`.
    pub assignment: &'static str,
    /// Replicas of each topic the backend creates; `None`: 3 when the
    /// cluster has three brokers or more, else as many as it has.
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of those topics; `None`: 2 when they have 3
    /// replicas or more, else 1.
    pub min_insync_replicas: Option<i32>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `common` may hold the SASL password: never printed.
        f.debug_struct("Options").field("bootstrap", &self.bootstrap).field("partitions", &self.partitions).finish()
    }
}

impl Options {
    pub fn from_url(url: &BrokerUrl) -> Result<Self> {
        url.reject_unknown_params(KNOWN_PARAMS)?;
        let invalid = |reason: &str| Error::InvalidUrl { url: url.redacted(), reason: reason.to_string() };
        let authority = url.path().split('/').next().unwrap_or_default();
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut servers = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host.rsplit_once(':').ok_or_else(|| invalid("each broker needs host:port"))?;
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(invalid("each broker needs host:port"));
            }
            servers.push(host.to_string());
        }
        let credentials = userinfo.and(url.credentials()).map(|(user, pass)| (user, pass.unwrap_or_default()));

        let mut common: Vec<(&'static str, String)> = Vec::new();
        let protocol = match url.param("security_protocol") {
            Some(p) => p.to_ascii_lowercase(),
            None if credentials.is_some() => "sasl_plaintext".into(),
            None => "plaintext".into(),
        };
        if !matches!(protocol.as_str(), "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl") {
            return Err(Error::invalid_option(
                "security_protocol",
                "expected plaintext, ssl, sasl_plaintext or sasl_ssl",
            ));
        }
        common.push(("security.protocol", protocol.clone()));
        if protocol.starts_with("sasl") {
            let (user, pass) = credentials
                .ok_or_else(|| invalid("SASL needs a user and password: kafka://user:password@host:port"))?;
            let mechanism = url.param("sasl_mechanism").unwrap_or("PLAIN").to_ascii_uppercase();
            if !matches!(mechanism.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                return Err(Error::invalid_option("sasl_mechanism", "expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"));
            }
            common.push(("sasl.mechanism", mechanism));
            common.push(("sasl.username", user));
            common.push(("sasl.password", pass));
        } else if credentials.is_some() {
            return Err(Error::invalid_option(
                "security_protocol",
                "a user in the URL needs sasl_plaintext or sasl_ssl",
            ));
        }
        for (param, setting) in [
            ("tls_ca_file", "ssl.ca.location"),
            ("tls_cert_file", "ssl.certificate.location"),
            ("tls_key_file", "ssl.key.location"),
        ] {
            if let Some(path) = url.param(param) {
                if !protocol.ends_with("ssl") {
                    return Err(Error::invalid_option(param, "TLS files need security_protocol=ssl or sasl_ssl"));
                }
                shared::read_option_file(param, path, std::fs::metadata)?;
                common.push((setting, path.to_string()));
            }
        }
        let partitions = |name: &str, default: u64| -> Result<i32> {
            let n = url.param_u64(name)?.unwrap_or(default);
            if n == 0 || n > 10_000 {
                return Err(Error::invalid_option(name, "must be between 1 and 10000"));
            }
            Ok(n as i32)
        };
        let replicas = |name: &str| -> Result<Option<i32>> {
            match url.param_u64(name)? {
                Some(n) if n == 0 || n > 32 => Err(Error::invalid_option(name, "must be between 1 and 32")),
                n => Ok(n.map(|n| n as i32)),
            }
        };
        let millis = |name: &str, default: u64| -> Result<Duration> {
            let d = url.param_millis(name)?.unwrap_or(Duration::from_millis(default));
            if d.as_millis() > i32::MAX as u128 {
                return Err(Error::invalid_option(name, "too large"));
            }
            Ok(d)
        };
        Ok(Options {
            bootstrap: servers.join(","),
            common,
            partitions: partitions("partitions", 3)?,
            retry_partitions: partitions("retry_partitions", 1)?,
            // The broker refuses records over its `message.max.bytes` (about 1 MB by default).
            max_message_bytes: match url.param("max_message_bytes") {
                None => 1_000_000,
                Some(_) => url.max_message_bytes(100 * 1024 * 1024)?,
            },
            delivery_timeout: millis("delivery_timeout_ms", 30_000)?,
            session_timeout: millis("session_timeout_ms", 10_000)?,
            max_poll_interval: millis("max_poll_interval_ms", 300_000)?,
            revoke_wait: millis("revoke_wait_ms", 10_000)?,
            linger: millis("linger_ms", 0)?,
            connect_timeout: millis("connect_timeout_ms", 5_000)?,
            record_deliveries_first: match url.param("record_deliveries").unwrap_or("before") {
                "before" => true,
                "async" => false,
                _ => return Err(Error::invalid_option("record_deliveries", "expected before or async")),
            },
            replication_factor: replicas("replication_factor")?,
            min_insync_replicas: replicas("min_insync_replicas")?,
            assignment: match url.param("assignment").unwrap_or("roundrobin") {
                "roundrobin" => "roundrobin",
                "range" => "range",
                "cooperative-sticky" => "cooperative-sticky",
                _ => {
                    return Err(Error::invalid_option("assignment", "expected roundrobin, range or cooperative-sticky"))
                }
            },
        })
    }

    /// librdkafka settings every client of this URL shares.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("socket.connection.setup.timeout.ms", self.connect_timeout.as_millis().to_string());
        // librdkafka's own log lines go through its logger, which may print
        // configuration; keep them to errors.
        c.set("log_level", "3");
        for (k, v) in &self.common {
            c.set(*k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_round_trip_and_never_contain_dots() {
        for g in ["billing", "a.b", "a_b", "a_.b", "_", ".", "x-y", "a__-b"] {
            let e = encode_group(g);
            assert!(!e.contains('.'), "{e}");
            assert_eq!(decode_group(&e).as_deref(), Some(g));
        }
        assert_eq!(decode_group("a.b"), None);
        assert_eq!(decode_group("a_b"), None);
    }

    #[test]
    fn levels_fit_what_remains() {
        assert_eq!(level_for(0), 0);
        assert_eq!(level_for(9), 0);
        assert_eq!(level_for(10), 10);
        assert_eq!(level_for(1_500), 1_000);
        assert_eq!(level_for(u64::MAX), 3_600_000);
    }

    #[test]
    fn derived_names_are_reserved() {
        assert!(check_topic("orders").is_ok());
        assert!(check_topic("orders.v2").is_ok());
        assert!(check_topic("orders.dlq").is_err());
        assert!(check_topic("orders.delay.100").is_err());
        assert!(check_topic("orders.g.retry.0").is_err());
        assert!(check_group(&"t".repeat(100), &"g".repeat(150)).is_err());
        assert!(check_group("orders", &"g".repeat(200)).is_ok());
    }

    #[test]
    fn urls_are_checked_and_passwords_kept_out_of_debug() {
        let opts = |u: &str| Options::from_url(&BrokerUrl::parse(u).unwrap());
        let o = opts("kafka://127.0.0.1:9092,127.0.0.2:9093?partitions=6").unwrap();
        assert_eq!(o.bootstrap, "127.0.0.1:9092,127.0.0.2:9093");
        assert_eq!(o.partitions, 6);
        let o = opts("kafka://alice:s3cr%40t@127.0.0.1:9092?sasl_mechanism=SCRAM-SHA-512").unwrap();
        assert!(o.common.contains(&("sasl.password", "s3cr@t".to_string())));
        assert!(!format!("{o:?}").contains("s3cr"));
        assert_eq!(opts("kafka://127.0.0.1").unwrap_err().code(), "INVALID_URL");
        assert_eq!(opts("kafka://h:1?partitions=0").unwrap_err().code(), "INVALID_OPTION");
        assert_eq!(opts("kafka://h:1?security_protocol=tls").unwrap_err().code(), "INVALID_OPTION");
        assert_eq!(opts("kafka://h:1?tls_ca_file=/nonexistent").unwrap_err().code(), "INVALID_OPTION");
        assert_eq!(opts("kafka://h:1?bogus=1").unwrap_err().code(), "INVALID_OPTION");
        assert!(opts("kafka://h:1").unwrap().record_deliveries_first);
        assert!(!opts("kafka://h:1?record_deliveries=async").unwrap().record_deliveries_first);
        assert_eq!(opts("kafka://h:1?record_deliveries=later").unwrap_err().code(), "INVALID_OPTION");
        assert_eq!(opts("kafka://h:1").unwrap().assignment, "roundrobin");
        let replicated = opts("kafka://h:1?replication_factor=3&min_insync_replicas=2").unwrap();
        assert_eq!((replicated.replication_factor, replicated.min_insync_replicas), (Some(3), Some(2)));
        assert!(opts("kafka://h:1?replication_factor=0").is_err());
        assert_eq!(opts("kafka://h:1?assignment=cooperative-sticky").unwrap().assignment, "cooperative-sticky");
        assert_eq!(opts("kafka://h:1?assignment=sticky").unwrap_err().code(), "INVALID_OPTION");
    }
}
