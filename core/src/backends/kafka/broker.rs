//! The Kafka `Broker`: the clients a handle holds (producer, admin,
//! readers, inspectors, dead-letter views), and the trait implementation,
//! which hands each operation to the file of its concept: `publish` (the
//! producer and publishes), `topology` (topics), `settle` (acks, retries,
//! dead-lettering), `dead_letters`, `inspect`; receiving is the readers'
//! (`reader`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;

use super::dead_letters::DeadLetterViews;
use super::publish::Outbox;
use super::reader::Reader;
use super::schedules::KafkaScheduleStore;
use super::{err, Options, BACKEND};
use crate::backends::shared;
use crate::broker::{Broker, Capabilities, ConsumerInfo, Delivery, GroupStats, ReceiveRequest};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::schedule::ScheduleStore;
use crate::url::BrokerUrl;

/// A Kafka connection for one URL.
pub struct KafkaBroker {
    pub(super) options: Options,
    url: String,
    pub(super) outbox: Outbox,
    pub(super) admin: AdminClient<DefaultClientContext>,
    /// Consumers by (topic, group, consumer name): one per worker.
    readers: Mutex<HashMap<(String, String, String), Arc<Reader>>>,
    /// Unsubscribed consumers that read a group's committed offsets, by consumer group.
    pub(super) inspectors: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    pub(super) dead_letters: Arc<DeadLetterViews>,
    pub(super) topics_ready: Mutex<HashSet<String>>,
    pub(super) groups_ready: Mutex<HashSet<(String, String)>>,
    closed: AtomicBool,
    /// Made on first use: it has a reader of its own.
    schedules: std::sync::OnceLock<Result<Arc<KafkaScheduleStore>>>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker").field("url", &self.url).finish()
    }
}

/// Runs blocking librdkafka calls off the async threads.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Backend { backend: BACKEND, reason: e.to_string() })?
}

impl KafkaBroker {
    /// Connects: checks that the brokers answer before returning.
    pub async fn connect(url: &BrokerUrl) -> Result<Self> {
        let options = Options::from_url(url)?;
        let redacted = url.redacted();
        let connect_err =
            |e: KafkaError| Error::Connect { backend: BACKEND, url: redacted.clone(), reason: e.to_string() };
        let outbox = Outbox::new(&options).map_err(connect_err)?;
        let admin: AdminClient<DefaultClientContext> = options.client_config().create().map_err(connect_err)?;
        let dead_letters = Arc::new(DeadLetterViews::new(&options)?);
        let probe = outbox.producer.clone();
        let wait = options.connect_timeout;
        let shown = redacted.clone();
        blocking(move || {
            probe.client().fetch_metadata(None, wait).map(|_| ()).map_err(|e| Error::Connect {
                backend: BACKEND,
                url: shown,
                reason: format!("no broker answered within {wait:?}: {e}"),
            })
        })
        .await?;
        Ok(KafkaBroker {
            outbox,
            options,
            url: url.redacted(),
            admin,
            readers: Mutex::new(HashMap::new()),
            inspectors: Mutex::new(HashMap::new()),
            dead_letters,
            topics_ready: Mutex::new(HashSet::new()),
            groups_ready: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
            schedules: std::sync::OnceLock::new(),
        })
    }

    pub(super) fn check_open(&self) -> Result<()> {
        shared::check_open(&self.closed)
    }

    fn reader(&self, topic: &str, group: &str, consumer: &str) -> Result<Arc<Reader>> {
        let key = (topic.to_string(), group.to_string(), consumer.to_string());
        let mut readers = self.readers.lock().unwrap();
        if let Some(r) = readers.get(&key) {
            return Ok(Arc::clone(r));
        }
        let r = Arc::new(Reader::new(&self.options, topic, group, consumer)?);
        readers.insert(key, Arc::clone(&r));
        Ok(r)
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_bytes: self.options.max_message_bytes,
            delayed_delivery: true,
            ordered_delivery: true,
            replay_for_new_groups: true,
            leases: false,
            // The delivery record claims messages ahead of receive calls;
            // inspection counts them in flight.
            pushes_ahead: self.options.record_deliveries_first,
            owned_partitions: true,
            oldest_age: false,
            stats_delay: Duration::from_secs(2),
        }
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        self.create_group(topic, group).await
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.publish_batch(topic, messages).await
    }

    async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.publish_wire(topic, headers, payload).await
    }

    async fn receive(&self, request: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        self.check_open()?;
        self.ensure_group(request.topic, request.group).await?;
        let reader = self.reader(request.topic, request.group, request.consumer)?;
        reader.receive(&self.outbox, request.max.max(1), request.wait).await
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.ack_batch(deliveries).await
    }

    fn dispose(&self, deliveries: Vec<Delivery>) {
        // A worker's batch comes from one reader, whose reading task built it.
        match deliveries.first().and_then(|d| self.receipt(d).ok()).map(|r| Arc::clone(&r.reader)) {
            Some(reader) => reader.dispose(deliveries),
            None => drop(deliveries),
        }
    }

    async fn extend_leases(&self, deliveries: &[Delivery], _lease: Duration) -> Result<()> {
        // Held by the partition assignment, not a lease: only let a pending
        // revocation finish once its deadline passes.
        for d in deliveries {
            self.receipt(d)?.reader.tick();
        }
        Ok(())
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

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.list_groups(topic).await
    }

    async fn consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.list_consumers(topic, group).await
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.list_dead(topic, group, after, limit).await
    }

    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.redrive_dead(topic, group, ids).await
    }

    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.purge_dead(topic, group, ids).await
    }

    fn schedule_store(&self) -> Option<Arc<dyn ScheduleStore>> {
        let made =
            self.schedules.get_or_init(|| KafkaScheduleStore::new(&self.options, self.outbox.clone()).map(Arc::new));
        match made {
            Ok(store) => Some(Arc::clone(store) as Arc<dyn ScheduleStore>),
            Err(e) => {
                tracing::warn!(error = %e, "could not make the schedules' reader");
                None
            }
        }
    }

    async fn stop_receiving(&self, topic: &str, group: &str, consumer: &str) -> Result<()> {
        let reader = self.readers.lock().unwrap().remove(&(topic.to_string(), group.to_string(), consumer.to_string()));
        if let Some(reader) = reader {
            reader.close().await;
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Like a crash for whatever is in flight: nothing more is committed.
        let readers: Vec<Arc<Reader>> = self.readers.lock().unwrap().drain().map(|(_, r)| r).collect();
        for r in readers {
            r.close().await;
        }
        self.inspectors.lock().unwrap().clear();
        let producer = self.outbox.producer.clone();
        let _ = blocking(move || producer.flush(Duration::from_secs(10)).map_err(err)).await;
        Ok(())
    }
}

impl Drop for KafkaBroker {
    /// Dropped without `close`: the readers' tasks stop (each consumer
    /// then leaves the group once the deliveries it handed out are dropped).
    fn drop(&mut self) {
        for r in self.readers.get_mut().map(|m| m.values()).into_iter().flatten() {
            r.abandon();
        }
    }
}
