//! Reading what RabbitMQ delivers: its header table as text (without the
//! broker's own bookkeeping, with the delivery count), and a delivery as
//! a `Delivery` with its receipt.

use std::borrow::Cow;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use lapin::types::AMQPValue;
use lapin::BasicProperties;

use super::broker::AmqpBroker;
use super::receive::ConsumerLink;
use super::settle::AmqpReceipt;
use crate::backends::shared;
use crate::broker::{Delivery, Receipt};
use crate::message::from_millis;
use crate::wire;

/// Headers RabbitMQ adds for itself (dead-lettering history).
const BROKER_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

impl AmqpBroker {
    pub(super) fn to_delivery(link: &Arc<ConsumerLink>, d: lapin::message::Delivery) -> Delivery {
        link.unsettled.lock().unwrap().insert(d.delivery_tag);
        let (headers, delivery_count) = read_headers(&d.properties);
        let mut decoded = wire::decode(headers, Bytes::from(d.data), delivery_count);
        if decoded.message.content_type.is_none() {
            decoded.message.content_type = d.properties.content_type().as_ref().map(|c| c.to_string());
        }
        shared::fill_published_at(&mut decoded.message, || {
            Some(d.properties.timestamp().map(|t| from_millis(t * 1000)).unwrap_or_else(crate::message::now_millis))
        });
        Delivery::new(
            Arc::clone(&link.topic),
            Arc::clone(&link.group),
            decoded.message,
            decoded.malformed,
            Receipt::new(AmqpReceipt { link: Arc::clone(link), tag: d.delivery_tag, settled: AtomicBool::new(false) }),
        )
    }
}

/// Headers as text (borrowed from the delivery where they already are),
/// and the delivery count (the quorum queue's `x-delivery-count` counts
/// earlier deliveries).
pub(super) fn read_headers(props: &BasicProperties) -> (Vec<(&str, Cow<'_, str>)>, u32) {
    let mut out = Vec::new();
    let mut count = 1;
    if let Some(table) = props.headers() {
        out.reserve(table.inner().len());
        for (k, v) in table.inner() {
            let name = k.as_str();
            if name == "x-delivery-count" {
                count = value_string(v).and_then(|s| s.parse::<u32>().ok()).map_or(1, |n| n + 1);
                continue;
            }
            if BROKER_HEADERS.contains(&name) {
                continue; // the broker's own bookkeeping
            }
            if let Some(s) = value_string(v) {
                out.push((name, s));
            }
        }
    }
    if !out.iter().any(|(k, _)| *k == wire::ID) {
        if let Some(id) = props.message_id() {
            out.push((wire::ID, Cow::Borrowed(id.as_str())));
        }
    }
    (out, count)
}

fn value_string(v: &AMQPValue) -> Option<Cow<'_, str>> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()),
        AMQPValue::ShortString(s) => Cow::Borrowed(s.as_str()),
        AMQPValue::Boolean(b) => b.to_string().into(),
        AMQPValue::ShortShortInt(n) => n.to_string().into(),
        AMQPValue::ShortShortUInt(n) => n.to_string().into(),
        AMQPValue::ShortInt(n) => n.to_string().into(),
        AMQPValue::ShortUInt(n) => n.to_string().into(),
        AMQPValue::LongInt(n) => n.to_string().into(),
        AMQPValue::LongUInt(n) => n.to_string().into(),
        AMQPValue::LongLongInt(n) => n.to_string().into(),
        AMQPValue::Float(n) => n.to_string().into(),
        AMQPValue::Double(n) => n.to_string().into(),
        AMQPValue::Timestamp(n) => n.to_string().into(),
        _ => return None,
    })
}
