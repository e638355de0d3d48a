//! Publishing: the idempotent producer every write goes through (publishes,
//! retries, dead letters, redrives, the readers' moves), what one produce's
//! outcome means, a batch of messages (to the topic, or to a delay topic
//! when not due yet) and one message in its wire form.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::broker::KafkaBroker;
use super::{delay_topic, err, level_for, Options, BACKEND};
use crate::broker::{validate_batch, validate_raw, Broker};
use crate::error::{Error, Result};
use crate::message::{to_millis, Message};
use crate::wire;

/// The producer, and how long a publish may take.
#[derive(Clone)]
pub(super) struct Outbox {
    pub(super) producer: FutureProducer,
    timeout: Duration,
}

/// One record to produce.
pub(super) struct Record<'a> {
    pub(super) topic: &'a str,
    pub(super) key: Option<&'a [u8]>,
    pub(super) headers: &'a [(String, String)],
    /// `None`: a tombstone (no value at all), for compacted topics.
    pub(super) payload: Option<&'a [u8]>,
}

impl Outbox {
    /// The idempotent producer (acks=all, a bounded delivery timeout).
    pub fn new(options: &Options) -> std::result::Result<Outbox, KafkaError> {
        let mut config = options.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", options.delivery_timeout.as_millis().to_string())
            .set("linger.ms", options.linger.as_millis().to_string())
            .set("message.max.bytes", (options.max_message_bytes + 64 * 1024).to_string());
        Ok(Outbox { producer: config.create()?, timeout: options.delivery_timeout + Duration::from_secs(5) })
    }

    /// Produces one record and waits until Kafka has it.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        headers: &[(String, String)],
        payload: &[u8],
    ) -> Result<()> {
        self.send_all(&[Record { topic, key, headers, payload: Some(payload) }]).await.map(|_| ())
    }

    /// Produces every record (many in flight at once) and waits until Kafka
    /// has them all; returns the offset each was given, in order.
    pub(super) async fn send_all(&self, records: &[Record<'_>]) -> Result<Vec<i64>> {
        let mut offsets = vec![-1; records.len()];
        let mut pending: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(records.len());
        let deadline = Instant::now() + self.timeout;
        for (index, r) in records.iter().enumerate() {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in r.headers {
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
            let mut record = FutureRecord::to(r.topic).headers(headers);
            if let Some(payload) = r.payload {
                record = record.payload(payload);
            }
            if let Some(k) = r.key {
                record = record.key(k);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(f) => {
                        pending.push((index, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue is full: let some of ours land first.
                        if Instant::now() >= deadline {
                            return Err(Error::Timeout { operation: "publish", after: self.timeout });
                        }
                        record = back;
                        match pending.pop() {
                            Some((i, f)) => offsets[i] = delivered(f.await)?,
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) => return Err(err(e)),
                }
            }
        }
        for (i, f) in pending {
            offsets[i] = delivered(f.await)?;
        }
        Ok(offsets)
    }
}

/// The outcome of one produce, the record's offset (the outer error: the
/// producer went away).
pub(super) fn delivered<E>(
    result: std::result::Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>,
) -> Result<i64> {
    match result {
        Ok(Ok(delivery)) => Ok(delivery.offset),
        Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))) => Err(Error::Backend {
            backend: BACKEND,
            reason: "the broker refused a record as too large: raise its message.max.bytes or lower max_message_bytes"
                .into(),
        }),
        Ok(Err((e, _))) => Err(err(e)),
        Err(_) => Err(Error::Closed),
    }
}

impl KafkaBroker {
    pub(super) async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_open()?;
        validate_batch(topic, &messages, &self.capabilities())?;
        self.ensure_topic(topic).await?;
        let now = to_millis(SystemTime::now());
        let encoded: Vec<(String, Vec<(String, String)>)> = messages
            .iter()
            .map(|m| {
                let due = m.deliver_at.map_or(0, to_millis);
                let target = if due > now { delay_topic(topic, level_for(due - now)) } else { topic.to_string() };
                (target, wire::encode_headers(m))
            })
            .collect();
        let records: Vec<Record<'_>> = messages
            .iter()
            .zip(&encoded)
            .map(|(m, (target, headers))| Record {
                topic: target,
                key: m.key.as_deref().map(str::as_bytes),
                headers,
                payload: Some(&m.payload),
            })
            .collect();
        self.outbox.send_all(&records).await.map(|_| ())
    }

    pub(super) async fn publish_wire(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.check_open()?;
        validate_raw(topic, &headers, &payload, self.options.max_message_bytes)?;
        self.ensure_topic(topic).await?;
        self.outbox.send(topic, None, &headers, &payload).await
    }
}
