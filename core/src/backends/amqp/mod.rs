//! The RabbitMQ backend (`amqp://`, `amqps://`) over lapin. A URL may name
//! a cluster's nodes, `amqp://u:p@h1:5672,h2:5672/vhost`: a connection goes
//! to the first that answers (see `broker::Nodes`).
//!
//! Topology, per topic `T` and group `G`:
//!
//! | name | what |
//! |---|---|
//! | exchange `T` (topic) | the topic: every group's queue is bound to it with `#` |
//! | exchange `T.delay` (direct) | delayed publishes, routed by delay level to every group's wait queue of that level |
//! | queue `T.G` (quorum) | the group: its consumers compete on it |
//! | queues `T.G.wait.L` (classic) | one per delay level `L` (ms): a queue TTL of `L`, dead-lettering back into `T.G` |
//! | queue `T.G.dlq` (classic) | the group's dead letters |
//!
//! Waiting messages sit in wait queues, never in a consumer: a retry or
//! delayed message goes to the longest level not beyond its due time, and a
//! message that comes back before it is due goes round again to the next
//! level (a hop is not an attempt). Nothing needs a plugin.
//!
//! Publishes are persistent and done only when the broker confirms them;
//! consumers use manual acks and a prefetch (`basic.qos`) equal to what the
//! worker can hold. A retry, dead-letter or hand-back publishes the new copy,
//! waits for its confirm, then acks the original: a crash in between can
//! duplicate, never lose. A connection that drops gives its unacked messages
//! back to the queue; the quorum queue's delivery count makes the next
//! delivery count as an attempt. The client reconnects on the next call.
//!
//! Options (URL query): `max_message_bytes` (default 1 MiB),
//! `management_port` (default 15672; the management plugin gives the
//! in-flight count), `stats_delay_ms` (how stale those figures may be;
//! default 5000, RabbitMQ's `collect_statistics_interval`); for `amqps://`,
//! the system's trust store or `tls_ca_file` (PEM; trust this CA instead);
//! `consumer_timeout_ms`: how long RabbitMQ lets a delivery go unacked
//! before it closes the consumer's channel (the `x-consumer-timeout`
//! consumer argument, RabbitMQ 3.11.15 and later). Default: no limit, as a
//! lease renewed while the handler runs is on the other backends; bound
//! handlers with the worker's `handler_timeout`. Older nodes ignore the
//! argument and keep their `consumer_timeout` (30 min by default): a
//! handler that outlives it has its message counted `lost` in the worker's
//! stats, never as a success, and the message is delivered again (skipped
//! then if its idempotency key is done).

mod broker;
mod dead_letters;
mod inspect;
mod management;
mod options;
mod publish;
mod receive;
mod reply;
mod schedules;
mod settle;
mod topology;

pub use broker::AmqpBroker;

pub(crate) const BACKEND: &str = "amqp";

fn err(e: lapin::Error) -> crate::Error {
    crate::Error::Backend { backend: BACKEND, reason: e.to_string() }
}
