//! Dead letters: moving a delivery to its group's dead-letter stream, and
//! listing, redriving and purging that stream. Separate: the operator's
//! tools, beside the one settlement that feeds them.

use redis::Value;

use super::broker::RedisBroker;
use super::publish::{add_message, FieldArgs};
use super::receive::RedisReceipt;
use super::reply::{id_time, parse_entries, parse_id, split_fields};
use super::{err, scripts, TopicKeys, BACKEND};
use crate::broker::Delivery;
use crate::dead_letter::{self, DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::wire;

impl RedisBroker {
    /// Moves a delivery to its dead letters (`Broker::dead_letter`).
    pub(super) async fn dead_letter_one(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<RedisReceipt>(BACKEND)?;
        let keys = TopicKeys::new(&delivery.topic);
        let group = &*delivery.group;
        let source = if r.due { keys.due(group) } else { keys.stream.clone() };
        let mut inv = scripts::dead_letter().key(&source);
        inv.key(keys.dlq(group)).arg(group).arg(&*r.consumer).arg(&r.id).arg(if r.due { "1" } else { "0" });
        add_message(&mut inv, &delivery.message);
        for (name, value) in wire::encode_reason(reason) {
            inv.field(name.as_bytes(), value.as_bytes());
        }
        let done: i64 = inv.invoke_async(&mut self.conn()).await.map_err(err)?;
        if done == 0 {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        Ok(())
    }

    /// Lists dead letters after `after` (`Broker::list_dead_letters`).
    pub(super) async fn list_dead(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        let keys = TopicKeys::new(topic);
        let start = match after {
            Some(id) => {
                parse_id(id).ok_or_else(|| Error::invalid_option("after", format!("not a dead-letter id: `{id}`")))?;
                format!("({id}")
            }
            None => "-".to_string(),
        };
        let reply: Value = redis::cmd("XRANGE")
            .arg(keys.dlq(group))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(parse_entries(&reply)
            .into_iter()
            .filter_map(|(id, fields)| {
                let (headers, payload) = split_fields(fields?);
                let message = wire::decode(headers, payload, 1).message;
                let dead_at = id_time(&id);
                Some(dead_letter::from_stored(id, message, topic, group, dead_at))
            })
            .collect())
    }

    /// Moves dead letters back to the group (`Broker::redrive_dead_letters`).
    pub(super) async fn redrive_dead(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.check_open()?;
        let keys = TopicKeys::new(topic);
        self.group_ready(&keys, topic, group).await?;
        let mut conn = self.conn();
        let mut moved = 0;
        for id in ids {
            parse_id(id).ok_or_else(|| Error::invalid_option("ids", format!("not a dead-letter id: `{id}`")))?;
            let reply: Value =
                redis::cmd("XRANGE").arg(keys.dlq(group)).arg(id).arg(id).query_async(&mut conn).await.map_err(err)?;
            let Some((_, Some(fields))) = parse_entries(&reply).into_iter().next() else { continue };
            let (headers, payload) = split_fields(fields);
            let message = dead_letter::redriven(wire::decode(headers, payload, 1).message);
            let mut inv = scripts::redrive().key(keys.dlq(group));
            inv.key(keys.due(group)).arg(id);
            add_message(&mut inv, &message);
            let done: i64 = inv.invoke_async(&mut conn).await.map_err(err)?;
            moved += done as usize;
        }
        Ok(moved)
    }

    /// Deletes dead letters (`Broker::purge_dead_letters`).
    pub(super) async fn purge_dead(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.check_open()?;
        let keys = TopicKeys::new(topic);
        let mut conn = self.conn();
        match ids {
            None => {
                let (len, _): (usize, i64) = redis::pipe()
                    .atomic()
                    .cmd("XLEN")
                    .arg(keys.dlq(group))
                    .cmd("DEL")
                    .arg(keys.dlq(group))
                    .query_async(&mut conn)
                    .await
                    .map_err(err)?;
                Ok(len)
            }
            Some([]) => Ok(0),
            Some(ids) => {
                let n: usize =
                    redis::cmd("XDEL").arg(keys.dlq(group)).arg(ids).query_async(&mut conn).await.map_err(err)?;
                Ok(n)
            }
        }
    }
}
