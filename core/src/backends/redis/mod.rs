//! The Redis backend (`redis://`, `rediss://`; a Redis Cluster as
//! `redis+cluster://h1:p1,h2:p2`, Sentinel's primary as
//! `redis+sentinel://s1,s2/NAME`, see `connection`): streams and consumer
//! groups.
//!
//! Keys of one topic share the hash tag `{TOPIC}`, so they live in one slot
//! of a Redis Cluster and every script can touch them together:
//!
//! | key | what |
//! |---|---|
//! | `pb:{T}:stream` | the topic: every group is a consumer group on it |
//! | `pb:{T}:delay`, `pb:{T}:delay-data` | delayed publishes: a sorted set of parked entries, moved into the stream when due |
//! | `pb:{T}:retry:G`, `pb:{T}:park:G` | group G's waiting retries, moved into its due stream when due |
//! | `pb:{T}:due:G` | group G's own stream of due retries and redriven messages |
//! | `pb:{T}:dlq:G` | group G's dead letters |
//!
//! A stream entry's fields are the wire metadata names (`crate::wire`) plus
//! `payload`, the raw bytes; so `XADD pb:{orders}:stream * payload hello`
//! from redis-cli is a valid message, and Pillarbox messages read well in
//! redis-cli.
//!
//! Nothing is popped: an entry stays in the group's pending list until it is
//! acked, retried or dead-lettered (each one Lua script). A consumer that
//! dies leaves its entries pending; after the lease they are claimed by
//! another consumer (`XAUTOCLAIM`), which counts as a new attempt.
//!
//! Options (URL query): `max_message_bytes` (default 1 MiB),
//! `max_len` (bound on a topic's unconsumed messages; a publish beyond it
//! fails with `QUEUE_FULL` rather than trimming anything unconsumed),
//! `response_timeout_ms` (default 10000), `connect_timeout_ms` (default 5000),
//! `wait_replicas` (a publish waits until that many replicas have it, up to
//! `wait_timeout_ms`, default 1000: a failover cannot lose it),
//! and for `rediss://` (TLS): `tls_ca_file` (PEM; trust this CA instead of
//! the system's), `tls_cert_file` + `tls_key_file` (client certificate).
//! Username, password and database come from the URL:
//! `rediss://user:password@host:6380/2`.
//! Consumed entries (acked by every group) are trimmed automatically.
//! Durability is the server's: run Redis with `appendonly yes` (and
//! `appendfsync always` for no loss on power failure).

mod broker;
mod connection;
mod dead_letters;
mod idempotency;
mod inspect;
mod options;
mod publish;
mod receive;
mod reply;
mod schedules;
mod scripts;
mod settle;
mod topology;

pub use broker::RedisBroker;
pub use idempotency::RedisIdempotencyStore;
pub use schedules::RedisScheduleStore;

pub(crate) const BACKEND: &str = "redis";

/// The keys of one topic.
#[derive(Clone, Debug)]
pub(crate) struct TopicKeys {
    pub stream: String,
    pub delay: String,
    pub delay_data: String,
    prefix: String,
}

impl TopicKeys {
    pub fn new(topic: &str) -> Self {
        let prefix = format!("pb:{{{topic}}}");
        TopicKeys {
            stream: format!("{prefix}:stream"),
            delay: format!("{prefix}:delay"),
            delay_data: format!("{prefix}:delay-data"),
            prefix,
        }
    }

    pub fn retry(&self, group: &str) -> String {
        format!("{}:retry:{group}", self.prefix)
    }
    pub fn park(&self, group: &str) -> String {
        format!("{}:park:{group}", self.prefix)
    }
    pub fn due(&self, group: &str) -> String {
        format!("{}:due:{group}", self.prefix)
    }
    pub fn dlq(&self, group: &str) -> String {
        format!("{}:dlq:{group}", self.prefix)
    }
}

fn err(e: redis::RedisError) -> crate::Error {
    crate::Error::Backend { backend: BACKEND, reason: e.to_string() }
}
