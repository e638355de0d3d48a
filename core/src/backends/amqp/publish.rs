//! Publishing: a batch of messages (to the topic's exchange, or to its
//! delay exchange when not due yet), one message in its wire form, and the
//! confirmed publish every path uses (retries, dead letters, hand-backs).

use std::time::SystemTime;

use bytes::Bytes;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};

use super::broker::AmqpBroker;
use super::topology::{delay_exchange, level_for};
use super::{err, BACKEND};
use crate::broker::{validate_batch, validate_raw, Broker};
use crate::error::{Error, Result};
use crate::message::{to_millis, Message};
use crate::wire;

/// One message to publish: exchange, routing key, headers, payload, content type.
pub(super) type Outgoing = (String, String, Vec<(String, String)>, Bytes, Option<String>);

pub(super) fn headers_of(m: &Message) -> (Vec<(String, String)>, Bytes, Option<String>) {
    (wire::encode_headers(m), m.payload.clone(), m.content_type.clone())
}

impl AmqpBroker {
    pub(super) async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_open()?;
        validate_batch(topic, &messages, &self.capabilities())?;
        if messages.is_empty() {
            return Ok(());
        }
        let (_, admin, _) = self.link().await?;
        self.declare_topic(&admin, topic).await?;
        let now = to_millis(SystemTime::now());
        let items = messages
            .iter()
            .map(|m| {
                let (headers, payload, ct) = headers_of(m);
                match level_for(to_millis(m.due_at()).saturating_sub(now)) {
                    // Every group's wait queue of that level gets a copy.
                    Some(level) => (delay_exchange(topic), level.to_string(), headers, payload, ct),
                    None => (topic.to_string(), m.key.clone().unwrap_or_default(), headers, payload, ct),
                }
            })
            .collect();
        self.publish_confirmed(items).await
    }

    pub(super) async fn publish_wire(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.check_open()?;
        validate_raw(topic, &headers, &payload, self.max_message_bytes)?;
        let (_, admin, _) = self.link().await?;
        self.declare_topic(&admin, topic).await?;
        self.publish_confirmed(vec![(topic.to_string(), String::new(), headers, payload, None)]).await
    }

    /// Publishes and waits for the broker's confirm. `mandatory`: an
    /// unroutable message is an error rather than silently dropped.
    pub(super) async fn publish_confirmed(&self, items: Vec<Outgoing>) -> Result<()> {
        let (publish, _, _) = self.link().await?;
        let mut sends = Vec::with_capacity(items.len());
        let mut confirms = Vec::with_capacity(items.len());
        for (exchange, routing_key, headers, payload, content_type) in &items {
            let mut table = FieldTable::default();
            let mut id = None;
            for (k, v) in headers {
                // The id travels as the standard message-id property (a
                // short string: up to 255 bytes), not twice; a plain
                // message then has no header table for either side to parse.
                if k == wire::ID && v.len() <= 255 {
                    id = Some(v.as_str());
                    continue;
                }
                table.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
            }
            let mut props = BasicProperties::default().with_delivery_mode(2);
            if !table.inner().is_empty() {
                props = props.with_headers(table);
            }
            if let Some(id) = id {
                props = props.with_message_id(id.into());
            }
            if let Some(ct) = content_type {
                props = props.with_content_type(ct.as_str().into());
            }
            let mut send = Box::pin(publish.basic_publish(
                exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                payload,
                props,
            ));
            // The first poll queues the frames, in this order; what is left
            // is waiting for lapin's writer to send them, which the batch
            // shares: one hand-off to the writer per message, in sequence,
            // held publishing to about 20,000 a second.
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(send.as_mut(), cx))).await;
            sends.push((first, send, exchange.as_str()));
        }
        for (first, send, exchange) in sends {
            let confirm = match first {
                std::task::Poll::Ready(sent) => sent,
                std::task::Poll::Pending => send.await,
            }
            .map_err(err)?;
            confirms.push((confirm, exchange));
        }
        for (confirm, exchange) in confirms {
            match confirm.await.map_err(err)? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => {
                    let topic = exchange.strip_suffix(".delay").unwrap_or(exchange).to_string();
                    return Err(Error::Unsupported {
                        backend: BACKEND,
                        capability: if exchange.is_empty() {
                            "publishing to a queue that does not exist"
                        } else {
                            "keeping messages for a topic with no group: call ensure_group first"
                        },
                    })
                    .inspect_err(|_| tracing::warn!(topic = %topic, "unroutable publish"));
                }
                Confirmation::Nack(_) => {
                    return Err(Error::Backend {
                        backend: BACKEND,
                        reason: "the broker refused the message (nack)".into(),
                    })
                }
            }
        }
        Ok(())
    }
}
