//! The AMQP `Broker`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::management::Management;
use super::BACKEND;
use crate::broker::{
    validate_batch, validate_raw, Broker, Capabilities, ConsumerInfo, Delivery, GroupStats, Receipt, ReceiveRequest,
};
use crate::dead_letter::{self, DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::message::{from_millis, to_millis, validate_name, Message};
use crate::url::BrokerUrl;
use crate::wire;

/// Delay levels (ms): one wait queue each per group.
const LEVELS: [u64; 9] = [10, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000, 21_600_000, 86_400_000];
/// Longest a scan of dead letters reads (they are read and put back).
const DLQ_SCAN_LIMIT: usize = 10_000;

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

const KNOWN_PARAMS: &[&str] =
    &["max_message_bytes", "management_port", "stats_delay_ms", "tls_ca_file", "consumer_timeout_ms"];

/// The consumer timeout asked for when none is set: about 24 days, the
/// largest a 32-bit field holds, which RabbitMQ reads as no limit in
/// practice (a worker bounds its handlers with its own `handler_timeout`,
/// and a dead consumer's connection gives its messages back at once).
const NO_CONSUMER_TIMEOUT: i64 = i32::MAX as i64;

fn err(e: lapin::Error) -> Error {
    Error::Backend { backend: BACKEND, reason: e.to_string() }
}

/// The longest level not beyond `remaining` ms, if any.
/// A consumer's arguments: the delivery timeout that fits the worker.
fn consume_args(consumer_timeout_ms: i64) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(consumer_timeout_ms));
    args
}

fn level_for(remaining: u64) -> Option<u64> {
    LEVELS.iter().rev().copied().find(|l| *l <= remaining)
}

fn group_queue(topic: &str, group: &str) -> String {
    format!("{topic}.{group}")
}
fn wait_queue(topic: &str, group: &str, level: u64) -> String {
    format!("{topic}.{group}.wait.{level}")
}
fn dlq(topic: &str, group: &str) -> String {
    format!("{topic}.{group}.dlq")
}
fn delay_exchange(topic: &str) -> String {
    format!("{topic}.delay")
}

/// A live connection and its shared channels.
struct Link {
    connection: Connection,
    /// Publisher confirms on; shared by every publish of this handle.
    publish: Channel,
    /// Declarations.
    admin: Channel,
    generation: u64,
}

/// A group's consumer on this handle.
struct GroupConsumer {
    consumer: lapin::Consumer,
    tag: String,
    prefetch: u16,
    link: Arc<ConsumerLink>,
    /// Pushed to a consumer this one replaced (same channel) and not yet
    /// received: handed out first.
    pushed: std::collections::VecDeque<lapin::message::Delivery>,
}

/// What every delivery of one consumer channel shares (one `Arc` per
/// message rather than a channel handle and two names).
#[derive(Debug)]
struct ConsumerLink {
    channel: Channel,
    /// The connection it was opened on: a delivery from an older one
    /// cannot be settled any more.
    generation: u64,
    /// Delivery tags handed out and not yet settled, so a batch of acks can
    /// go as one `multiple` ack where that is exact.
    unsettled: Mutex<std::collections::BTreeSet<u64>>,
    topic: Arc<str>,
    group: Arc<str>,
}

impl ConsumerLink {
    /// Whether its deliveries can still be settled: same connection, channel open.
    fn live(&self, generation: u64) -> bool {
        self.generation == generation && self.channel.status().connected()
    }
}

/// A group's consumer on this handle, created on first receive.
type ConsumerSlot = Arc<tokio::sync::Mutex<Option<GroupConsumer>>>;

/// One message to publish: exchange, routing key, headers, payload, content type.
type Outgoing = (String, String, Vec<(String, String)>, Bytes, Option<String>);

#[derive(Debug)]
struct AmqpReceipt {
    link: Arc<ConsumerLink>,
    tag: u64,
    /// Acking a tag twice is a channel error that would close the channel
    /// and give back every other message on it: settle once, here.
    settled: AtomicBool,
}

/// A RabbitMQ connection for one URL.
pub struct AmqpBroker {
    uri: String,
    /// PEM of a CA to trust instead of the system's, for amqps://.
    tls_ca: Option<String>,
    url: String,
    vhost: String,
    max_message_bytes: usize,
    stats_delay: Duration,
    management: Management,
    link: tokio::sync::Mutex<Option<Link>>,
    generation: AtomicU64,
    declared: Mutex<HashSet<String>>,
    /// One consumer (and channel) per topic, group and consumer name, so
    /// workers sharing this handle never share a prefetch or a channel.
    consumers: Mutex<HashMap<(String, String, String), ConsumerSlot>>,
    /// `x-consumer-timeout` on every consumer, in ms: how long RabbitMQ
    /// (3.11.15 and later; older nodes ignore it and keep their own
    /// `consumer_timeout`) lets a delivery go unacked before it closes the channel.
    consumer_timeout: i64,
    /// Said once that the management API was out of reach for `inspect`.
    in_flight_unknown_said: AtomicBool,
    closed: AtomicBool,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker").field("url", &self.url).finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Connects to `amqp://` or `amqps://`.
    pub async fn connect(url: &BrokerUrl) -> Result<Self> {
        url.reject_unknown_params(KNOWN_PARAMS)?;
        let max_message_bytes = url.max_message_bytes(128 * 1024 * 1024)?;
        let mut parsed = url.as_url()?;
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
        let (user, password) = match url.credentials() {
            Some((user, password)) if !user.is_empty() => (user, password.unwrap_or_default()),
            _ => ("guest".to_string(), "guest".to_string()),
        };
        let vhost = match parsed.path().trim_start_matches('/') {
            "" => "/".to_string(),
            v => percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned(),
        };
        let management_port = url.param_u64("management_port")?.unwrap_or(15672);
        let management_port =
            u16::try_from(management_port).map_err(|_| Error::invalid_option("management_port", "not a port"))?;
        let stats_delay = url.param_millis("stats_delay_ms")?.unwrap_or(Duration::from_secs(5));
        let consumer_timeout = match url.param_millis("consumer_timeout_ms")? {
            None => NO_CONSUMER_TIMEOUT,
            Some(t) if t.is_zero() => return Err(Error::invalid_option("consumer_timeout_ms", "must be at least 1")),
            Some(t) => i64::try_from(t.as_millis()).unwrap_or(NO_CONSUMER_TIMEOUT).min(NO_CONSUMER_TIMEOUT),
        };
        let tls_ca = match url.param("tls_ca_file") {
            None => None,
            Some(_) if url.scheme() != "amqps" => {
                return Err(Error::invalid_option("tls_ca_file", "TLS options need an amqps:// URL"))
            }
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| Error::invalid_option("tls_ca_file", format!("cannot read `{path}`: {e}")))?,
            ),
        };
        parsed.set_query(None);
        let broker = AmqpBroker {
            uri: parsed.to_string(),
            tls_ca,
            url: url.redacted(),
            vhost,
            max_message_bytes,
            stats_delay,
            consumer_timeout,
            management: Management::new(&host, management_port, &user, &password),
            link: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            declared: Mutex::new(HashSet::new()),
            consumers: Mutex::new(HashMap::new()),
            in_flight_unknown_said: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        };
        broker.link().await?;
        Ok(broker)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The live connection's channels, reconnecting if it dropped.
    async fn link(&self) -> Result<(Channel, Channel, u64)> {
        let mut link = self.link.lock().await;
        let connect_err =
            |e: lapin::Error| Error::Connect { backend: BACKEND, url: self.url.clone(), reason: e.to_string() };
        if let Some(l) = link.as_mut() {
            if l.connection.status().connected() {
                // A channel the broker closed (after a refused declaration,
                // say) is replaced alone: deliveries on other channels stay valid.
                if !l.publish.status().connected() {
                    l.publish = l.connection.create_channel().await.map_err(connect_err)?;
                    l.publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(connect_err)?;
                }
                if !l.admin.status().connected() {
                    l.admin = l.connection.create_channel().await.map_err(connect_err)?;
                }
                return Ok((l.publish.clone(), l.admin.clone(), l.generation));
            }
        }
        let connection = match &self.tls_ca {
            None => Connection::connect(&self.uri, ConnectionProperties::default()).await,
            Some(ca) => {
                let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: Some(ca.clone()) };
                let runtime = lapin::runtime::default_runtime().map_err(connect_err)?;
                Connection::connect_with_config(&self.uri, ConnectionProperties::default(), tls, runtime).await
            }
        }
        .map_err(connect_err)?;
        let publish = connection.create_channel().await.map_err(connect_err)?;
        publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(connect_err)?;
        let admin = connection.create_channel().await.map_err(connect_err)?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        // A new connection: declarations and consumers start over.
        self.declared.lock().unwrap().clear();
        self.consumers.lock().unwrap().clear();
        let out = (publish.clone(), admin.clone(), generation);
        *link = Some(Link { connection, publish, admin, generation });
        Ok(out)
    }

    async fn declare_topic(&self, admin: &Channel, topic: &str) -> Result<()> {
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

    async fn declare_group(&self, topic: &str, group: &str) -> Result<()> {
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

    /// Publishes and waits for the broker's confirm. `mandatory`: an
    /// unroutable message is an error rather than silently dropped.
    async fn publish_confirmed(&self, items: Vec<Outgoing>) -> Result<()> {
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

    /// Where a copy for `group` goes: the longest wait level not beyond its
    /// due time, or the group's queue when (nearly) due.
    fn route_for_group(topic: &str, group: &str, due_ms: u64) -> String {
        match level_for(due_ms.saturating_sub(to_millis(SystemTime::now()))) {
            Some(level) => wait_queue(topic, group, level),
            None => group_queue(topic, group),
        }
    }

    async fn consumer_for(&self, topic: &str, group: &str, consumer: &str) -> ConsumerSlot {
        let mut consumers = self.consumers.lock().unwrap();
        Arc::clone(consumers.entry((topic.to_string(), group.to_string(), consumer.to_string())).or_default())
    }

    fn to_delivery(link: &Arc<ConsumerLink>, d: lapin::message::Delivery) -> Delivery {
        link.unsettled.lock().unwrap().insert(d.delivery_tag);
        let (headers, delivery_count) = read_headers(&d.properties);
        let mut decoded = wire::decode(headers, Bytes::from(d.data), delivery_count);
        if decoded.message.content_type.is_none() {
            decoded.message.content_type = d.properties.content_type().as_ref().map(|c| c.to_string());
        }
        if decoded.message.published_at == SystemTime::UNIX_EPOCH {
            decoded.message.published_at =
                d.properties.timestamp().map(|t| from_millis(t * 1000)).unwrap_or_else(crate::message::now_millis);
        }
        Delivery::new(
            Arc::clone(&link.topic),
            Arc::clone(&link.group),
            decoded.message,
            decoded.malformed,
            Receipt::new(AmqpReceipt { link: Arc::clone(link), tag: d.delivery_tag, settled: AtomicBool::new(false) }),
        )
    }

    /// Replaces `state`'s consumer with one of `prefetch` on the same channel.
    async fn reconsume(&self, state: &mut GroupConsumer, req: &ReceiveRequest<'_>, prefetch: u16) -> Result<()> {
        let channel = state.link.channel.clone();
        channel.basic_cancel(state.tag.as_str().into(), BasicCancelOptions::default()).await.map_err(err)?;
        // Past the cancel's answer nothing more comes to the old consumer:
        // what it was pushed is in its buffer now.
        while let Some(Some(Ok(d))) = state.consumer.next().now_or_never() {
            state.pushed.push_back(d);
        }
        let (consumer, tag) = self.consume(&channel, req.topic, req.group, req.consumer, prefetch).await?;
        (state.consumer, state.tag, state.prefetch) = (consumer, tag, prefetch);
        Ok(())
    }

    /// Starts a consumer of the group's queue on `channel` with `prefetch`.
    async fn consume(
        &self,
        channel: &Channel,
        topic: &str,
        group: &str,
        consumer: &str,
        prefetch: u16,
    ) -> Result<(lapin::Consumer, String)> {
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(err)?;
        let tag = format!("{consumer}-{:08x}", fastrand::u32(..));
        let consumer = channel
            .basic_consume(
                group_queue(topic, group).into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                consume_args(self.consumer_timeout),
            )
            .await
            .map_err(err)?;
        Ok((consumer, tag))
    }

    async fn settle(&self, delivery: &Delivery) -> Result<()> {
        let r = delivery.receipt_as::<AmqpReceipt>(BACKEND)?;
        // A closed channel means the broker has put the message back.
        if !r.link.live(self.generation.load(Ordering::Acquire)) || r.settled.swap(true, Ordering::AcqRel) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        r.link.unsettled.lock().unwrap().remove(&r.tag);
        r.link
            .channel
            .basic_ack(r.tag, BasicAckOptions::default())
            .await
            .map_err(|_| Error::lease_lost(&delivery.message.id))
    }

    /// Reads the group's dead letters (at most `DLQ_SCAN_LIMIT`) on a channel
    /// of its own, asking `choose` about each: `None` leaves it (it goes back
    /// when the channel closes), `Some(None)` removes it, `Some(Some((queue,
    /// copy)))` publishes `copy` to `queue`, waits for the confirm, then
    /// removes it. Returns how many were removed.
    async fn scan_dead_letters(
        &self,
        topic: &str,
        group: &str,
        mut choose: impl FnMut(&str, &Message) -> Option<Option<(String, Message)>>,
    ) -> Result<usize> {
        let connection_channel = self.fresh_channel().await?;
        let mut taken = 0;
        for _ in 0..DLQ_SCAN_LIMIT {
            let got = match connection_channel.basic_get(dlq(topic, group).into(), BasicGetOptions::default()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => break, // no such queue
            };
            let (headers, _) = read_headers(&got.delivery.properties);
            let message = wire::decode(headers, Bytes::from(got.delivery.data.clone()), 1).message;
            let id = message.id.clone();
            match choose(&id, &message) {
                None => {}
                Some(copy) => {
                    if let Some((queue, copy)) = copy {
                        let headers = wire::encode_headers(&copy);
                        self.publish_confirmed(vec![(
                            String::new(),
                            queue,
                            headers,
                            copy.payload.clone(),
                            copy.content_type.clone(),
                        )])
                        .await?;
                    }
                    connection_channel
                        .basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
                        .await
                        .map_err(err)?;
                    taken += 1;
                }
            }
        }
        let _ = connection_channel.close(200, "scan done".into()).await;
        Ok(taken)
    }

    /// A channel of its own on the live connection: for consumers, and for
    /// calls the broker may answer by closing the channel (a passive declare
    /// or a purge of a queue that does not exist).
    async fn fresh_channel(&self) -> Result<Channel> {
        self.link().await?;
        let link = self.link.lock().await;
        link.as_ref().ok_or(Error::Closed)?.connection.create_channel().await.map_err(err)
    }

    /// Messages ready in a queue (0 if it does not exist).
    async fn ready(&self, queue: &str) -> Result<u64> {
        let channel = self.fresh_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await;
        let n = declared.map(|q| u64::from(q.message_count())).unwrap_or(0);
        let _ = channel.close(200, "inspected".into()).await;
        Ok(n)
    }
}

/// Headers as text (borrowed from the delivery where they already are),
/// and the delivery count (the quorum queue's `x-delivery-count` counts
/// earlier deliveries).
fn read_headers(props: &BasicProperties) -> (Vec<(&str, Cow<'_, str>)>, u32) {
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

fn headers_of(m: &Message) -> (Vec<(String, String)>, Bytes, Option<String>) {
    (wire::encode_headers(m), m.payload.clone(), m.content_type.clone())
}

#[async_trait]
impl Broker for AmqpBroker {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_bytes: self.max_message_bytes,
            delayed_delivery: true,
            ordered_delivery: true,
            replay_for_new_groups: false,
            leases: false,
            pushes_ahead: true,
            owned_partitions: false,
            oldest_age: false,
            stats_delay: self.stats_delay,
        }
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        self.check_open()?;
        validate_name("topic", topic)?;
        validate_name("group", group)?;
        self.declare_group(topic, group).await
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
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

    async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.check_open()?;
        validate_raw(topic, &headers, &payload, self.max_message_bytes)?;
        let (_, admin, _) = self.link().await?;
        self.declare_topic(&admin, topic).await?;
        self.publish_confirmed(vec![(topic.to_string(), String::new(), headers, payload, None)]).await
    }

    async fn receive(&self, req: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        self.check_open()?;
        validate_name("topic", req.topic)?;
        validate_name("group", req.group)?;
        if req.max == 0 {
            return Ok(Vec::new());
        }
        let slot = self.consumer_for(req.topic, req.group, req.consumer).await;
        let mut guard = slot.lock().await;
        let generation = self.generation.load(Ordering::Acquire);
        // The prefetch is what this consumer may hold unacked: the worker's window.
        let wanted = u16::try_from(req.window.max(req.max)).unwrap_or(u16::MAX);
        // A consumer from an older connection is replaced. A closed channel
        // shows as the end of its stream (below), not by asking its status
        // on every receive: that lock is taken by lapin's reader on every
        // frame, and asking here contended with it.
        let stale = guard.as_ref().is_none_or(|c| c.link.generation != generation);
        if stale {
            // Declared once per consumer (and again after a reconnect), not per receive.
            self.declare_group(req.topic, req.group).await?;
            let channel = self.fresh_channel().await?;
            let (consumer, tag) = self.consume(&channel, req.topic, req.group, req.consumer, wanted).await?;
            let link = Arc::new(ConsumerLink {
                channel,
                generation: self.generation.load(Ordering::Acquire),
                unsettled: Mutex::default(),
                topic: req.topic.into(),
                group: req.group.into(),
            });
            *guard = Some(GroupConsumer { consumer, tag, prefetch: wanted, link, pushed: Default::default() });
        }
        let state = guard.as_mut().expect("consumer set above");
        // RabbitMQ applies a prefetch only to consumers started after it:
        // a new window is a new consumer on the same channel (what this one
        // holds stays valid to settle). Raised at once; lowered only once
        // the window has halved, not as it wavers (three round trips), so
        // little that another worker could take is pushed to a busy one.
        if wanted > state.prefetch || wanted < state.prefetch / 2 {
            if let Err(e) = self.reconsume(state, &req, wanted).await {
                *guard = None; // its channel is gone: a new one next time
                return Err(e);
            }
        }
        let state = guard.as_mut().expect("consumer set above");
        let deadline = tokio::time::Instant::now() + req.wait;
        let mut out = Vec::new();
        while out.len() < req.max {
            // Take what is already here (polled once: a timer set to now
            // fires on the next millisecond tick, which held every batch a
            // millisecond); wait, with a timer, only for the first.
            let next = match state.pushed.pop_front() {
                Some(d) => Some(Some(Ok(d))),
                None => state.consumer.next().now_or_never(),
            };
            let next = match next {
                Some(next) => Some(next),
                None if out.is_empty() => tokio::time::timeout_at(deadline, state.consumer.next()).await.ok(),
                None => break,
            };
            let next = match next {
                None => break,
                Some(None) => {
                    *guard = None;
                    return if out.is_empty() {
                        Err(Error::Connect {
                            backend: BACKEND,
                            url: self.url.clone(),
                            reason: "consumer cancelled".into(),
                        })
                    } else {
                        Ok(out)
                    };
                }
                Some(Some(Err(e))) => {
                    *guard = None;
                    return if out.is_empty() { Err(err(e)) } else { Ok(out) };
                }
                Some(Some(Ok(d))) => d,
            };
            let delivery = AmqpBroker::to_delivery(&state.link, next);
            // Not due yet: back to the wait queues (a hop, not an attempt).
            if let Some(due) = delivery.message.deliver_at {
                let remaining = to_millis(due).saturating_sub(to_millis(SystemTime::now()));
                if level_for(remaining).is_some() {
                    let queue = AmqpBroker::route_for_group(req.topic, req.group, to_millis(due));
                    let (headers, payload, ct) = headers_of(&delivery.message);
                    self.publish_confirmed(vec![(String::new(), queue, headers, payload, ct)]).await?;
                    self.settle(&delivery).await?;
                    continue;
                }
                if remaining > 0 {
                    tokio::time::sleep(Duration::from_millis(remaining)).await; // under the shortest level
                }
            }
            out.push(delivery);
        }
        Ok(out)
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.check_open()?;
        // What the broker took back: how many, and the first one's id.
        let (mut lost, mut first_lost) = (0usize, None);
        let current = self.generation.load(Ordering::Acquire);
        // Per consumer channel: the tags of this batch below every tag still
        // unsettled on it go as one `multiple` ack; the others one by one.
        let mut by_channel: Vec<(&Arc<ConsumerLink>, Vec<(&Delivery, &AmqpReceipt)>)> = Vec::new();
        for d in deliveries {
            let r = d.receipt_as::<AmqpReceipt>(BACKEND)?;
            match by_channel.iter_mut().find(|(link, _)| Arc::ptr_eq(link, &r.link)) {
                Some((_, batch)) => batch.push((d, r)),
                None => by_channel.push((&r.link, vec![(d, r)])),
            }
        }
        for (link, batch) in by_channel {
            // A closed channel (or connection) has given these back already.
            let live = link.live(current);
            let mut tags = Vec::with_capacity(batch.len());
            for (d, r) in batch {
                if !live || r.settled.swap(true, Ordering::AcqRel) {
                    lost += 1;
                    first_lost.get_or_insert(d.message.id.as_str());
                } else {
                    tags.push(r.tag);
                }
            }
            if tags.is_empty() {
                continue;
            }
            tags.sort_unstable();
            let floor = {
                let mut unsettled = link.unsettled.lock().unwrap();
                for t in &tags {
                    unsettled.remove(t);
                }
                unsettled.first().copied().unwrap_or(u64::MAX)
            };
            let split = tags.partition_point(|t| *t < floor);
            let mut acks = Vec::new();
            if split > 0 {
                acks.push((tags[split - 1], true));
            }
            acks.extend(tags[split..].iter().map(|t| (*t, false)));
            for (tag, multiple) in acks {
                if let Err(e) = link.channel.basic_ack(tag, BasicAckOptions { multiple }).await {
                    // The channel closed: the broker gives these back to the queue.
                    tracing::debug!(error = %e, "an ack did not reach RabbitMQ");
                    lost += tags.len();
                    break;
                }
            }
        }
        match (lost, first_lost) {
            (0, _) => Ok(()),
            (1, Some(id)) => Err(Error::lease_lost(id)),
            (count, _) => Err(Error::leases_lost(count)),
        }
    }

    async fn extend_leases(&self, _deliveries: &[Delivery], _lease: Duration) -> Result<()> {
        Ok(()) // held by the channel, not by a lease
    }

    async fn retry(&self, delivery: &Delivery, next: Message) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<AmqpReceipt>(BACKEND)?;
        if !r.link.live(self.generation.load(Ordering::Acquire)) || r.settled.load(Ordering::Acquire) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        let queue = AmqpBroker::route_for_group(&delivery.topic, &delivery.group, to_millis(next.due_at()));
        let (headers, payload, ct) = headers_of(&next);
        self.publish_confirmed(vec![(String::new(), queue, headers, payload, ct)]).await?;
        self.settle(delivery).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<AmqpReceipt>(BACKEND)?;
        if !r.link.live(self.generation.load(Ordering::Acquire)) || r.settled.load(Ordering::Acquire) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        let (mut headers, payload, ct) = headers_of(&delivery.message);
        headers.extend(wire::encode_reason(reason));
        self.publish_confirmed(vec![(String::new(), dlq(&delivery.topic, &delivery.group), headers, payload, ct)])
            .await?;
        self.settle(delivery).await
    }

    async fn inspect(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.check_open()?;
        validate_name("topic", topic)?;
        validate_name("group", group)?;
        let ready = self.ready(&group_queue(topic, group)).await?;
        let mut waiting = 0;
        for level in LEVELS {
            waiting += self.ready(&wait_queue(topic, group, level)).await?;
        }
        let dead_letters = self.ready(&dlq(topic, group)).await?;
        // Ready, waiting and dead letters come over AMQP; in flight only
        // from the management plugin: without it, unknown rather than 0.
        let in_flight = match self.management.unacked(&self.vhost, &group_queue(topic, group)).await {
            Ok(n) => Some(n),
            Err(e) => {
                if !self.in_flight_unknown_said.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the in-flight count is unknown (inspect gives the other figures)");
                }
                None
            }
        };
        Ok(GroupStats {
            topic: topic.to_string(),
            group: group.to_string(),
            ready,
            in_flight,
            waiting,
            dead_letters,
            oldest_age: None,
            partitions: Vec::new(),
        })
    }

    async fn consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.check_open()?;
        let found = self.management.consumers(&self.vhost, &group_queue(topic, group)).await?;
        Ok(found
            .into_iter()
            .map(|(tag, unacked)| {
                // Tags are `{consumer name}-{8 hex digits}`.
                let name = match tag.rsplit_once('-') {
                    Some((name, suffix)) if suffix.len() == 8 => name.to_string(),
                    _ => tag,
                };
                let mut c = ConsumerInfo::named(name);
                c.holding = unacked;
                c
            })
            .collect())
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.check_open()?;
        let names = self.management.bound_queues(&self.vhost, topic).await?;
        let prefix = format!("{topic}.");
        let mut groups: Vec<String> =
            names.into_iter().filter_map(|q| q.strip_prefix(&prefix).map(str::to_string)).collect();
        groups.sort();
        Ok(groups)
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        // Dead letters are listed by reading them and putting them back
        // (the scan's channel closes without acking); the id is the message id.
        let mut seen_after = after.is_none();
        let mut out = Vec::new();
        self.scan_dead_letters(topic, group, |id, message| {
            if !seen_after {
                seen_after = Some(id) == after;
            } else if out.len() < limit {
                out.push(dead_letter::from_stored(
                    id.to_string(),
                    message.clone(),
                    topic,
                    group,
                    SystemTime::UNIX_EPOCH,
                ));
            }
            None
        })
        .await?;
        Ok(out)
    }

    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.check_open()?;
        let queue = group_queue(topic, group);
        self.scan_dead_letters(topic, group, |id, message| {
            ids.iter().any(|i| i == id).then(|| Some((queue.clone(), dead_letter::redriven(message.clone()))))
        })
        .await
    }

    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.check_open()?;
        match ids {
            None => {
                let channel = self.fresh_channel().await?;
                // A missing queue has nothing to purge (and closes the channel).
                let n = channel.queue_purge(dlq(topic, group).into(), QueuePurgeOptions::default()).await.unwrap_or(0);
                let _ = channel.close(200, "purged".into()).await;
                Ok(n as usize)
            }
            Some(ids) => {
                self.scan_dead_letters(topic, group, |id, _| ids.iter().any(|i| i == id).then_some(None)).await
            }
        }
    }

    async fn stop_receiving(&self, topic: &str, group: &str, consumer: &str) -> Result<()> {
        let key = (topic.to_string(), group.to_string(), consumer.to_string());
        let slot = self.consumers.lock().unwrap().remove(&key);
        let Some(slot) = slot else { return Ok(()) };
        let Some(mut state) = slot.lock().await.take() else { return Ok(()) };
        if !state.link.channel.status().connected() {
            return Ok(()); // the broker has them back already
        }
        // Take what was pushed and never received, without acking (so the
        // broker pushes nothing more: the prefetch stays full), put copies
        // back in the queue, stop the consumer, then ack the originals.
        // Closing the channel on them instead would give them back as a
        // new attempt.
        let mut pushed: Vec<Delivery> =
            state.pushed.drain(..).map(|d| AmqpBroker::to_delivery(&state.link, d)).collect();
        while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(50), state.consumer.next()).await {
            pushed.push(AmqpBroker::to_delivery(&state.link, d));
        }
        let copies = pushed
            .iter()
            .map(|d| {
                let (headers, payload, ct) = headers_of(&d.message);
                (String::new(), group_queue(topic, group), headers, payload, ct)
            })
            .collect();
        self.publish_confirmed(copies).await?;
        state.link.channel.basic_cancel(state.tag.as_str().into(), BasicCancelOptions::default()).await.map_err(err)?;
        for d in &pushed {
            self.settle(d).await?;
        }
        let _ = state.link.channel.close(200, "stopped receiving".into()).await;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if let Some(link) = self.link.lock().await.take() {
            let _ = link.connection.close(200, "closed".into()).await;
        }
        Ok(())
    }
}
