//! The RabbitMQ `Broker`: the connection a handle holds (reconnected on
//! the next call when it drops), and the trait implementation, which hands
//! each operation to the file of its concept: `options` (the URL's
//! options), `topology` (exchanges, queues, delay levels), `publish`,
//! `receive` (consumers and receive calls), `settle` (acks, retries, dead
//! letters), `dead_letters`, `inspect`, and `reply` (reading deliveries).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};

use super::management::Management;
use super::options::Options;
use super::receive::ConsumerSlot;
use super::schedules::AmqpScheduleStore;
use super::{err, BACKEND};
use crate::backends::shared;
use crate::broker::{Broker, Capabilities, ConsumerInfo, Delivery, GroupStats, ReceiveRequest};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::message::{validate_name, Message};
use crate::schedule::ScheduleStore;
use crate::url::BrokerUrl;

/// A live connection and its shared channels.
struct Link {
    connection: Connection,
    /// Publisher confirms on; shared by every publish of this handle.
    publish: Channel,
    /// Declarations.
    admin: Channel,
    generation: u64,
}

/// A RabbitMQ connection for one URL.
pub struct AmqpBroker {
    /// Shared with the schedule store, which has a connection of its own.
    nodes: Arc<Nodes>,
    pub(super) url: String,
    pub(super) vhost: String,
    pub(super) max_message_bytes: usize,
    stats_delay: Duration,
    pub(super) management: Management,
    link: tokio::sync::Mutex<Option<Link>>,
    pub(super) generation: AtomicU64,
    pub(super) declared: Mutex<HashSet<String>>,
    /// One consumer (and channel) per topic, group and consumer name, so
    /// workers sharing this handle never share a prefetch or a channel.
    pub(super) consumers: Mutex<HashMap<(String, String, String), ConsumerSlot>>,
    /// `x-consumer-timeout` on every consumer, in ms: how long RabbitMQ
    /// (3.11.15 and later; older nodes ignore it and keep their own
    /// `consumer_timeout`) lets a delivery go unacked before it closes the channel.
    pub(super) consumer_timeout: i64,
    /// Said once that the management API was out of reach for `inspect`.
    pub(super) in_flight_unknown_said: AtomicBool,
    closed: AtomicBool,
    /// Made on first use: it has a connection of its own.
    schedules: std::sync::OnceLock<Arc<AmqpScheduleStore>>,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker").field("url", &self.url).finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Connects to `amqp://` or `amqps://`.
    pub async fn connect(url: &BrokerUrl) -> Result<Self> {
        let Options { uris, tls_ca, vhost, max_message_bytes, stats_delay, consumer_timeout, management } =
            Options::from_url(url)?;
        let broker = AmqpBroker {
            nodes: Arc::new(Nodes::new(uris, tls_ca, url.redacted())),
            url: url.redacted(),
            vhost,
            max_message_bytes,
            stats_delay,
            consumer_timeout,
            management,
            link: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            declared: Mutex::new(HashSet::new()),
            consumers: Mutex::new(HashMap::new()),
            in_flight_unknown_said: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            schedules: std::sync::OnceLock::new(),
        };
        broker.link().await?;
        Ok(broker)
    }

    pub(super) fn check_open(&self) -> Result<()> {
        shared::check_open(&self.closed)
    }

    /// The live connection's channels, reconnecting if it dropped.
    pub(super) async fn link(&self) -> Result<(Channel, Channel, u64)> {
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
        let connection = self.nodes.dial().await?;
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

    /// A channel of its own on the live connection: for consumers, and for
    /// calls the broker may answer by closing the channel (a passive declare
    /// or a purge of a queue that does not exist).
    pub(super) async fn fresh_channel(&self) -> Result<Channel> {
        self.link().await?;
        let link = self.link.lock().await;
        link.as_ref().ok_or(Error::Closed)?.connection.create_channel().await.map_err(err)
    }
}

/// The nodes a URL names (one, or a cluster's), and the one that answered
/// last: a new connection goes there first, then to the others in turn.
pub(super) struct Nodes {
    uris: Vec<String>,
    /// PEM of a CA to trust instead of the system's, for amqps://.
    tls_ca: Option<String>,
    /// The URL, redacted, for errors.
    url: String,
    last: std::sync::atomic::AtomicUsize,
}

impl Nodes {
    pub(super) fn new(uris: Vec<String>, tls_ca: Option<String>, url: String) -> Self {
        Nodes { uris, tls_ca, url, last: std::sync::atomic::AtomicUsize::new(0) }
    }

    /// The URL, redacted.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// A new connection to the first node that answers.
    pub(super) async fn dial(&self) -> Result<Connection> {
        let start = self.last.load(Ordering::Relaxed);
        let mut reasons = Vec::new();
        for i in (0..self.uris.len()).map(|k| (start + k) % self.uris.len()) {
            match self.dial_one(&self.uris[i]).await {
                Ok(connection) => {
                    if i != start {
                        tracing::info!(node = i + 1, nodes = self.uris.len(), "connected to another RabbitMQ node");
                    }
                    self.last.store(i, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(e) => {
                    reasons.push(if self.uris.len() > 1 { format!("node {}: {e}", i + 1) } else { e.to_string() })
                }
            }
        }
        Err(Error::Connect { backend: BACKEND, url: self.url.clone(), reason: reasons.join("; ") })
    }

    async fn dial_one(&self, uri: &str) -> std::result::Result<Connection, lapin::Error> {
        match &self.tls_ca {
            None => Connection::connect(uri, ConnectionProperties::default()).await,
            Some(ca) => {
                let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: Some(ca.clone()) };
                let runtime = lapin::runtime::default_runtime()?;
                Connection::connect_with_config(uri, ConnectionProperties::default(), tls, runtime).await
            }
        }
    }
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
        shared::check_names(topic, group)?;
        self.declare_group(topic, group).await
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.publish_batch(topic, messages).await
    }

    async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.publish_wire(topic, headers, payload).await
    }

    async fn receive(&self, req: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        self.receive_batch(req).await
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.ack_batch(deliveries).await
    }

    async fn extend_leases(&self, _deliveries: &[Delivery], _lease: Duration) -> Result<()> {
        Ok(()) // held by the channel, not by a lease
    }

    async fn retry(&self, delivery: &Delivery, next: Message) -> Result<()> {
        self.retry_later(delivery, next).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.dead_letter_one(delivery, reason).await
    }

    async fn inspect(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.group_stats(topic, group).await
    }

    async fn consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.list_consumers(topic, group).await
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        validate_name("topic", topic)?;
        self.list_groups(topic).await
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        shared::check_names(topic, group)?;
        self.list_dead(topic, group, after, limit).await
    }

    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        shared::check_names(topic, group)?;
        self.redrive_dead(topic, group, ids).await
    }

    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        shared::check_names(topic, group)?;
        self.purge_dead(topic, group, ids).await
    }

    fn schedule_store(&self) -> Option<Arc<dyn ScheduleStore>> {
        let store = self.schedules.get_or_init(|| Arc::new(AmqpScheduleStore::new(Arc::clone(&self.nodes))));
        Some(Arc::clone(store) as Arc<dyn ScheduleStore>)
    }

    async fn stop_receiving(&self, topic: &str, group: &str, consumer: &str) -> Result<()> {
        self.stop_consumer(topic, group, consumer).await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if let Some(link) = self.link.lock().await.take() {
            let _ = link.connection.close(200, "closed".into()).await;
        }
        if let Some(schedules) = self.schedules.get() {
            schedules.close().await;
        }
        Ok(())
    }
}
