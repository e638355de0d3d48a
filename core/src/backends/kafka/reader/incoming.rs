//! Messages as the reading task copies them out of the consumer
//! (`Incoming`), the receipts their deliveries carry (`KafkaReceipt`), and
//! the reuse of both once the worker is done with them (`Spares`).
//! Separate: the per-message allocations, apart from the partition
//! bookkeeping that decides about them.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::Message as _;

use super::{Kind, Reader};
use crate::backends::kafka::{header_fields, header_pairs};
use crate::broker::{Delivery, Receipt};
use crate::message::{to_millis, Message};
use crate::wire;

/// Which message a delivery holds.
pub(in crate::backends::kafka) struct KafkaReceipt {
    pub reader: Arc<Reader>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub(super) epoch: u64,
}

/// The kind of the topic a message came from, remembered for the next
/// message (most come from the same topic as the one before): one string
/// comparison instead of a hash lookup per message.
#[derive(Default)]
pub(super) struct KindCache {
    last: Option<(String, Kind, Arc<str>)>,
}

impl KindCache {
    /// `None` for a topic this consumer does not read.
    pub(super) fn get(&mut self, topic: &str, kinds: &HashMap<String, (Kind, Arc<str>)>) -> Option<(Kind, Arc<str>)> {
        match &self.last {
            Some((name, kind, shared)) if name == topic => Some((*kind, Arc::clone(shared))),
            _ => {
                let (kind, shared) = kinds.get(topic)?;
                self.last = Some((topic.to_string(), *kind, Arc::clone(shared)));
                Some((*kind, Arc::clone(shared)))
            }
        }
    }
}

/// A message copied out of the consumer.
pub(super) struct Incoming {
    pub(super) kind: Kind,
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) timestamp_ms: Option<i64>,
    pub(super) key: Option<Bytes>,
    pub(super) body: Body,
}

// The large variant is the common one: boxing it would allocate per message.
#[allow(clippy::large_enum_variant)]
pub(super) enum Body {
    /// A main topic message, decoded straight from the client's buffers
    /// (its attempt counts this delivery only, until its record is known),
    /// already in the `Arc` its delivery shares it by: a message is a few
    /// hundred bytes, and it is moved several times on its way out.
    Decoded { message: Arc<Message>, malformed: Option<String> },
    /// A waiting message, kept in its wire form: it may move on as it is.
    Wire { headers: Vec<(String, String)>, payload: Bytes },
}

impl Incoming {
    /// Copies a message of `topic`, of kind `kind`, out of the client's buffers.
    pub(super) fn copy(
        m: &rdkafka::message::BorrowedMessage<'_>,
        kind: Kind,
        topic: Arc<str>,
        spares: &mut Spares,
    ) -> Incoming {
        let payload = m.payload().map(Bytes::copy_from_slice).unwrap_or_default();
        let body = match kind {
            Kind::Main => {
                let (message, malformed) = spares.decode(header_pairs(m), payload);
                Body::Decoded { message, malformed }
            }
            Kind::Delay(_) | Kind::Retry(_) => Body::Wire { headers: header_fields(m), payload },
        };
        Incoming {
            kind,
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(Bytes::copy_from_slice),
            body,
        }
    }

    pub(super) fn deliver_at_ms(&self) -> Option<u64> {
        match &self.body {
            Body::Decoded { message, .. } => message.deliver_at.map(to_millis),
            Body::Wire { headers, .. } => {
                headers.iter().find(|(k, _)| k == wire::DELIVER_AT).and_then(|(_, v)| v.trim().parse().ok())
            }
        }
    }
}

/// The messages and receipts of deliveries the worker is done with, kept
/// by the reading task for the next messages it reads: their allocations
/// (a message, its id, a receipt: three a message) are reused rather than
/// freed and made again, in the task that does most of a consumer's work
/// (+12% consuming a 400,000 backlog, median of 8 alternating pairs).
/// Local to the reading task: the receipts hold the reader, and go with the task.
#[derive(Default)]
pub(super) struct Spares {
    pub(super) messages: Vec<Arc<Message>>,
    pub(super) receipts: Vec<Receipt>,
}

/// Most spares kept of each (more than a worker's window is never needed).
const MAX_SPARES: usize = 1024;

impl Spares {
    /// Keeps what only these deliveries still hold; drops the rest.
    pub(super) fn recycle(&mut self, finished: &mut Vec<Delivery>) {
        for d in finished.drain(..) {
            let (mut message, mut receipt) = (d.message, d.receipt);
            if self.messages.len() < MAX_SPARES {
                if let Some(m) = Arc::get_mut(&mut message) {
                    // The payload may be large: not kept until the next message.
                    m.payload = Bytes::new();
                    self.messages.push(message);
                }
            }
            if self.receipts.len() < MAX_SPARES && receipt.get_mut::<KafkaReceipt>().is_some() {
                self.receipts.push(receipt);
            }
        }
    }

    /// Decodes a main topic message into a spare message, or a new one.
    pub(super) fn decode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a str, std::borrow::Cow<'a, str>)>,
        payload: Bytes,
    ) -> (Arc<Message>, Option<String>) {
        if let Some(mut message) = self.messages.pop() {
            if let Some(m) = Arc::get_mut(&mut message) {
                let malformed = wire::decode_into(m, fields, payload, 1);
                return (message, malformed);
            }
        }
        let decoded = wire::decode(fields, payload, 1);
        (Arc::new(decoded.message), decoded.malformed)
    }

    /// A receipt for `value`, in a spare one if there is one.
    pub(super) fn receipt(&mut self, value: KafkaReceipt) -> Receipt {
        if let Some(mut receipt) = self.receipts.pop() {
            if let Some(r) = receipt.get_mut::<KafkaReceipt>() {
                *r = value;
                return receipt;
            }
        }
        Receipt::new(value)
    }
}
