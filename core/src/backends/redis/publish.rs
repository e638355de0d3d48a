//! Publishing: a batch of messages as stream entries (or parked in the
//! delay set when not due yet), one entry in its wire form, and how a
//! message is written as an entry's fields (also for retries, dead letters
//! and redrives). Separate: the producer's path, shares nothing with reads.

use bytes::Bytes;
use redis::Value;

use super::broker::{now_ms, RedisBroker};
use super::{err, scripts, TopicKeys, BACKEND};
use crate::broker::{validate_batch, validate_raw, Broker};
use crate::error::{Error, Result};
use crate::message::{to_millis, Message};
use crate::wire;

/// Field holding the payload in a stream entry.
pub(super) const PAYLOAD: &str = "payload";

/// Appends a message's stream fields (its wire headers, then the payload),
/// straight from the message: no header strings in between.
pub(super) fn add_message<C: FieldArgs>(cmd: &mut C, m: &Message) {
    wire::visit_headers(m, |name, value| cmd.field(name.as_bytes(), value.as_bytes()));
    cmd.field(PAYLOAD.as_bytes(), &m.payload);
}

/// Commands and script invocations both take field arguments.
pub(super) trait FieldArgs {
    fn field(&mut self, name: &[u8], value: &[u8]);
}

impl FieldArgs for redis::Cmd {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.arg(name).arg(value);
    }
}

impl FieldArgs for redis::ScriptInvocation<'_> {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.arg(name).arg(value);
    }
}

impl RedisBroker {
    /// Publishes a batch (`Broker::publish`).
    pub(super) async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_open()?;
        validate_batch(topic, &messages, &self.capabilities())?;
        if messages.iter().any(|m| m.headers.contains_key(PAYLOAD)) {
            return Err(Error::InvalidMessage(format!("header `{PAYLOAD}` is reserved on Redis for the payload")));
        }
        if messages.is_empty() {
            return Ok(());
        }
        let keys = TopicKeys::new(topic);
        let mut conn = self.conn();
        if let Some(limit) = self.options.max_len {
            let len: u64 = redis::cmd("XLEN").arg(&keys.stream).query_async(&mut conn).await.map_err(err)?;
            if len + messages.len() as u64 > limit {
                self.trim_consumed(topic, true).await?;
                let len: u64 = redis::cmd("XLEN").arg(&keys.stream).query_async(&mut conn).await.map_err(err)?;
                if len + messages.len() as u64 > limit {
                    return Err(Error::QueueFull { topic: topic.to_string(), limit });
                }
            }
        }
        let now = now_ms();
        let delayed = messages.iter().any(|m| m.deliver_at.is_some_and(|t| to_millis(t) > now));
        if delayed {
            // The pipeline below calls the script by hash: make sure the server has it.
            scripts::publish_delayed().load_async(&mut conn).await.map_err(err)?;
        }
        let mut pipe = redis::Pipeline::with_capacity(messages.len());
        for m in &messages {
            let due = to_millis(m.due_at());
            // Sized up front: growing each command's buffer argument by
            // argument took an eighth of the publishing time.
            let fields = 2 * (6 + m.headers.len()) + 2;
            let bytes = wire::encoded_headers_len(m)
                + PAYLOAD.len()
                + m.payload.len()
                + keys.delay_data.len().max(keys.stream.len())
                + keys.delay.len()
                + 64;
            let mut cmd = if due > now {
                let mut c = redis::Cmd::with_capacity(fields + 6, bytes);
                c.arg("EVALSHA");
                c.arg(scripts::publish_delayed().get_hash()).arg(2).arg(&keys.delay_data).arg(&keys.delay).arg(due);
                c
            } else {
                let mut c = redis::Cmd::with_capacity(fields + 3, bytes);
                c.arg("XADD").arg(&keys.stream).arg("*");
                c
            };
            add_message(&mut cmd, m);
            pipe.add_command(cmd);
        }
        self.wait_for_replicas(&mut pipe);
        let replies = pipe.query_async::<Vec<Value>>(&mut conn).await.map_err(err)?;
        self.check_replicated(replies.last())
    }

    /// With `wait_replicas`, ends a publish's pipeline with `WAIT`: it goes
    /// to the node that took the writes (on a cluster, the topic's primary).
    fn wait_for_replicas(&self, pipe: &mut redis::Pipeline) {
        if let Some(n) = self.options.wait_replicas {
            pipe.cmd("WAIT").arg(n).arg(self.options.wait_timeout.as_millis() as u64);
        }
    }

    /// With `wait_replicas`, fails a publish that fewer replicas took (its
    /// messages are on the primary: publishing again may duplicate them,
    /// never lose them).
    fn check_replicated(&self, wait_reply: Option<&Value>) -> Result<()> {
        let Some(wanted) = self.options.wait_replicas else { return Ok(()) };
        let got: u64 = wait_reply.and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or(0);
        if got < wanted {
            return Err(Error::Backend {
                backend: BACKEND,
                reason: format!(
                    "the publish reached {got} of the {wanted} replicas wait_replicas asks for within {:?}; \
                     a failover could lose it, so it is not reported as published",
                    self.options.wait_timeout
                ),
            });
        }
        Ok(())
    }

    /// Publishes one entry in its wire form (`Broker::publish_raw`).
    pub(super) async fn publish_wire(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.check_open()?;
        validate_raw(topic, &headers, &payload, self.options.max_message_bytes)?;
        let keys = TopicKeys::new(topic);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&keys.stream).arg("*");
        for (k, v) in &headers {
            cmd.arg(k).arg(v);
        }
        cmd.arg(PAYLOAD).arg(&payload[..]);
        let mut pipe = redis::Pipeline::new();
        pipe.add_command(cmd);
        self.wait_for_replicas(&mut pipe);
        let replies = pipe.query_async::<Vec<Value>>(&mut self.conn()).await.map_err(err)?;
        self.check_replicated(replies.last().filter(|_| replies.len() > 1))
    }
}
