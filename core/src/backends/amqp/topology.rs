//! Topology: the delay levels, the names of a topic's exchanges and a
//! group's queues (main, wait queues, dead letters), declaring them, and
//! which queue a copy goes to for the time it is due.

use std::time::SystemTime;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::broker::AmqpBroker;
use super::err;
use crate::backends::shared;
use crate::error::Result;
use crate::message::to_millis;

/// Delay levels (ms): one wait queue each per group.
pub(super) const LEVELS: [u64; 9] = [10, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000, 21_600_000, 86_400_000];

/// The longest level not beyond `remaining` ms, if any.
pub(super) fn level_for(remaining: u64) -> Option<u64> {
    shared::longest_level(&LEVELS, remaining)
}

pub(super) fn group_queue(topic: &str, group: &str) -> String {
    format!("{topic}.{group}")
}
pub(super) fn wait_queue(topic: &str, group: &str, level: u64) -> String {
    format!("{topic}.{group}.wait.{level}")
}
pub(super) fn dlq(topic: &str, group: &str) -> String {
    format!("{topic}.{group}.dlq")
}
pub(super) fn delay_exchange(topic: &str) -> String {
    format!("{topic}.delay")
}

impl AmqpBroker {
    pub(super) async fn declare_topic(&self, admin: &Channel, topic: &str) -> Result<()> {
        if self.declared.lock().unwrap().contains(topic) {
            return Ok(());
        }
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        admin.exchange_declare(topic.into(), ExchangeKind::Topic, durable, FieldTable::default()).await.map_err(err)?;
        admin
            .exchange_declare(delay_exchange(topic).into(), ExchangeKind::Direct, durable, FieldTable::default())
            .await
            .map_err(err)?;
        self.declared.lock().unwrap().insert(topic.to_string());
        Ok(())
    }

    pub(super) async fn declare_group(&self, topic: &str, group: &str) -> Result<()> {
        let key = format!("{topic}\n{group}");
        if self.declared.lock().unwrap().contains(&key) {
            return Ok(());
        }
        let (_, admin, _) = self.link().await?;
        self.declare_topic(&admin, topic).await?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let main = group_queue(topic, group);
        let mut quorum = FieldTable::default();
        quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        admin.queue_declare(main.as_str().into(), durable, quorum).await.map_err(err)?;
        admin
            .queue_bind(
                main.as_str().into(),
                topic.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        for level in LEVELS {
            let mut args = FieldTable::default();
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(level as i64));
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
            args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(main.as_str().into()));
            let wait = wait_queue(topic, group, level);
            admin.queue_declare(wait.as_str().into(), durable, args).await.map_err(err)?;
            admin
                .queue_bind(
                    wait.as_str().into(),
                    delay_exchange(topic).into(),
                    level.to_string().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(err)?;
        }
        admin.queue_declare(dlq(topic, group).into(), durable, FieldTable::default()).await.map_err(err)?;
        self.declared.lock().unwrap().insert(key);
        Ok(())
    }

    /// Where a copy for `group` goes: the longest wait level not beyond its
    /// due time, or the group's queue when (nearly) due.
    pub(super) fn route_for_group(topic: &str, group: &str, due_ms: u64) -> String {
        match level_for(due_ms.saturating_sub(to_millis(SystemTime::now()))) {
            Some(level) => wait_queue(topic, group, level),
            None => group_queue(topic, group),
        }
    }
}
