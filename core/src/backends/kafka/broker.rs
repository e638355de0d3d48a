//! The Kafka `Broker`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::TopicPartitionList;

use super::dead_letters::DeadLetterViews;
use super::reader::{KafkaReceipt, Marks, Reader};
use super::{
    check_group, check_topic, consumer_group, decode_group, delay_topic, dlq_topic, err, level_for, retry_topic,
    Options, BACKEND, LEVELS,
};
use crate::broker::{
    validate_batch, validate_raw, Broker, Capabilities, ConsumerInfo, Delivery, GroupStats, PartitionLag,
    ReceiveRequest,
};
use crate::dead_letter::{self, DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::message::{to_millis, Message};
use crate::url::BrokerUrl;
use crate::wire;

/// Dead letters: the partition the message was read from.
pub const DL_PARTITION: &str = "pb-dl-partition";
/// Dead letters: its offset there.
pub const DL_OFFSET: &str = "pb-dl-offset";

/// The producer, and how long a publish may take.
#[derive(Clone)]
pub(super) struct Outbox {
    producer: FutureProducer,
    timeout: Duration,
}

/// One record to produce.
struct Record<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    headers: &'a [(String, String)],
    payload: &'a [u8],
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
        self.send_all(&[Record { topic, key, headers, payload }]).await
    }

    /// Produces every record (many in flight at once) and waits until Kafka
    /// has them all.
    async fn send_all(&self, records: &[Record<'_>]) -> Result<()> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        let deadline = Instant::now() + self.timeout;
        for r in records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in r.headers {
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
            let mut record = FutureRecord::to(r.topic).payload(r.payload).headers(headers);
            if let Some(k) = r.key {
                record = record.key(k);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue is full: let some of ours land first.
                        if Instant::now() >= deadline {
                            return Err(Error::Timeout { operation: "publish", after: self.timeout });
                        }
                        record = back;
                        match pending.pop() {
                            Some(f) => delivered(f.await)?,
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) => return Err(err(e)),
                }
            }
        }
        for f in pending {
            delivered(f.await)?;
        }
        Ok(())
    }
}

/// The outcome of one produce (the outer error: the producer went away).
fn delivered<E>(result: std::result::Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>) -> Result<()> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))) => Err(Error::Backend {
            backend: BACKEND,
            reason: "the broker refused a record as too large: raise its message.max.bytes or lower max_message_bytes"
                .into(),
        }),
        Ok(Err((e, _))) => Err(err(e)),
        Err(_) => Err(Error::Closed),
    }
}

/// A Kafka connection for one URL.
pub struct KafkaBroker {
    options: Options,
    url: String,
    outbox: Outbox,
    admin: AdminClient<DefaultClientContext>,
    /// Consumers by (topic, group, consumer name): one per worker.
    readers: Mutex<HashMap<(String, String, String), Arc<Reader>>>,
    /// Unsubscribed consumers that read a group's committed offsets, by consumer group.
    inspectors: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    dead_letters: Arc<DeadLetterViews>,
    topics_ready: Mutex<HashSet<String>>,
    groups_ready: Mutex<HashSet<(String, String)>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker").field("url", &self.url).finish()
    }
}

/// Runs blocking librdkafka calls off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
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
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Creates topics that do not exist yet, and waits until the cluster's
    /// metadata shows them (consumers and producers look there).
    async fn create_topics(&self, wanted: Vec<(String, i32, bool)>) -> Result<()> {
        let new: Vec<NewTopic<'_>> = wanted
            .iter()
            .map(|(name, partitions, compacted)| {
                let t = NewTopic::new(name, *partitions, TopicReplication::Fixed(-1));
                if *compacted {
                    t.set("cleanup.policy", "compact")
                } else {
                    t
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in self.admin.create_topics(new.iter(), &opts).await.map_err(err)? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Backend { backend: BACKEND, reason: format!("creating topic `{name}`: {code}") })
                }
            }
        }
        let producer = self.outbox.producer.clone();
        let names: Vec<String> = wanted.into_iter().map(|w| w.0).collect();
        blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let md = producer.client().fetch_metadata(None, Duration::from_secs(10)).map_err(err)?;
                let present: HashSet<&str> = md
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                    .map(|t| t.name())
                    .collect();
                if names.iter().all(|n| present.contains(n.as_str())) {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout { operation: "topic creation", after: Duration::from_secs(30) });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
    }

    /// The topic and its delay topics exist.
    async fn ensure_topic(&self, topic: &str) -> Result<()> {
        check_topic(topic)?;
        if self.topics_ready.lock().unwrap().contains(topic) {
            return Ok(());
        }
        let mut wanted = vec![(topic.to_string(), self.options.partitions, false)];
        wanted.extend(LEVELS.iter().map(|l| (delay_topic(topic, *l), self.options.retry_partitions, false)));
        self.create_topics(wanted).await?;
        self.topics_ready.lock().unwrap().insert(topic.to_string());
        Ok(())
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

    fn inspector(&self, topic: &str, group: &str) -> Result<Arc<BaseConsumer>> {
        let id = consumer_group(topic, group);
        let mut inspectors = self.inspectors.lock().unwrap();
        if let Some(c) = inspectors.get(&id) {
            return Ok(Arc::clone(c));
        }
        let mut config = self.options.client_config();
        config.set("group.id", &id).set("enable.auto.commit", "false");
        let c: Arc<BaseConsumer> = Arc::new(config.create().map_err(err)?);
        inspectors.insert(id, Arc::clone(&c));
        Ok(c)
    }

    fn receipt<'a>(&self, d: &'a Delivery) -> Result<&'a KafkaReceipt> {
        d.receipt_as::<KafkaReceipt>(BACKEND)
    }

    async fn produce_dead_letter(
        &self,
        topic: &str,
        group: &str,
        letter: Vec<(String, String)>,
        m: &Message,
    ) -> Result<()> {
        self.outbox.send(&dlq_topic(topic, group), Some(m.id.as_bytes()), &letter, &m.payload).await
    }

    /// Tombstones (a key without a value) for dead letters: the view
    /// drops them at once, compaction for good.
    async fn remove_dead_letters(&self, dlq: &str, ids: &[String]) -> Result<()> {
        let mut pending = Vec::with_capacity(ids.len());
        for id in ids {
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq).key(id.as_bytes());
            pending.push(self.outbox.producer.send_result(record).map_err(|(e, _)| err(e))?);
        }
        for f in pending {
            delivered(f.await)?;
        }
        self.dead_letters.forget(dlq, ids);
        Ok(())
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
        self.check_open()?;
        check_group(topic, group)?;
        self.ensure_topic(topic).await?;
        let key = (topic.to_string(), group.to_string());
        if self.groups_ready.lock().unwrap().contains(&key) {
            return Ok(());
        }
        let mut wanted: Vec<(String, i32, bool)> =
            LEVELS.iter().map(|l| (retry_topic(topic, group, *l), self.options.retry_partitions, false)).collect();
        wanted.push((dlq_topic(topic, group), 1, true));
        self.create_topics(wanted).await?;
        self.groups_ready.lock().unwrap().insert(key);
        Ok(())
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
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
                payload: &m.payload,
            })
            .collect();
        self.outbox.send_all(&records).await
    }

    async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.check_open()?;
        validate_raw(topic, &headers, &payload, self.options.max_message_bytes)?;
        self.ensure_topic(topic).await?;
        self.outbox.send(topic, None, &headers, &payload).await
    }

    async fn receive(&self, request: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        self.check_open()?;
        self.ensure_group(request.topic, request.group).await?;
        let reader = self.reader(request.topic, request.group, request.consumer)?;
        reader.receive(&self.outbox, request.max.max(1), request.wait).await
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let receipts = deliveries.iter().map(|d| self.receipt(d)).collect::<Result<Vec<_>>>()?;
        let mut lost = None;
        // A worker's batch comes from one reader: settled under one lock.
        let mut rest: &[&KafkaReceipt] = &receipts;
        let mut offset = 0;
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|r| Arc::ptr_eq(&r.reader, &first.reader)).count();
            if let Some(i) = first.reader.settle_all(&rest[..n]) {
                lost.get_or_insert_with(|| deliveries[offset + i].message.id.clone());
            }
            // Committed in the background, like any Kafka consumer's offsets: a
            // crash before the commit lands redelivers (at-least-once).
            first.reader.commit_soon();
            rest = &rest[n..];
            offset += n;
        }
        match lost {
            Some(message_id) => Err(Error::lease_lost(&message_id)),
            None => Ok(()),
        }
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
        let r = self.receipt(delivery)?;
        if !r.reader.holds(r) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        let remaining = next.deliver_at.map_or(0, |t| to_millis(t).saturating_sub(to_millis(SystemTime::now())));
        let target = retry_topic(&delivery.topic, &delivery.group, level_for(remaining));
        let headers = wire::encode_headers(&next);
        self.outbox.send(&target, next.key.as_deref().map(str::as_bytes), &headers, &next.payload).await?;
        r.reader.settle(r);
        if let Err(e) = r.reader.commit().await {
            tracing::debug!(error = %e, "commit failed; retried with the next one");
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        let r = self.receipt(delivery)?;
        if !r.reader.holds(r) {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        let m = &delivery.message;
        let mut headers = wire::encode_headers(m);
        headers.extend(wire::encode_reason(reason));
        headers.push((DL_PARTITION.to_string(), r.partition.to_string()));
        headers.push((DL_OFFSET.to_string(), r.offset.to_string()));
        self.produce_dead_letter(&delivery.topic, &delivery.group, headers, m).await?;
        r.reader.settle(r);
        if let Err(e) = r.reader.commit().await {
            tracing::debug!(error = %e, "commit failed; retried with the next one");
        }
        Ok(())
    }

    async fn inspect(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.check_open()?;
        self.ensure_group(topic, group).await?;
        let inspector = self.inspector(topic, group)?;
        let producer = self.outbox.producer.clone();
        let (topic_s, group_s) = (topic.to_string(), group.to_string());
        let mut stats = blocking(move || {
            // Right after a topic is created its partitions may have no
            // leader yet: such answers are transient, so look again.
            let mut tries = 0;
            loop {
                match group_figures(&producer, &inspector, &topic_s, &group_s) {
                    Err(e) if tries < 10 && leader_unknown(&e) => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    figures => return figures.map_err(err),
                }
            }
        })
        .await?;
        let views = Arc::clone(&self.dead_letters);
        let (dlq, topic_s, group_s) = (dlq_topic(topic, group), topic.to_string(), group.to_string());
        stats.dead_letters = blocking(move || views.count(&dlq, &topic_s, &group_s)).await?;
        Ok(stats)
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.check_open()?;
        check_topic(topic)?;
        let producer = self.outbox.producer.clone();
        let prefix = format!("{topic}.");
        blocking(move || {
            let md = producer.client().fetch_metadata(None, Duration::from_secs(10)).map_err(err)?;
            let mut groups: Vec<String> = md
                .topics()
                .iter()
                .filter_map(|t| t.name().strip_prefix(&prefix)?.strip_suffix(".dlq").and_then(decode_group))
                .collect();
            groups.sort();
            Ok(groups)
        })
        .await
    }

    async fn consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.check_open()?;
        check_topic(topic)?;
        let producer = self.outbox.producer.clone();
        let (id, topic) = (consumer_group(topic, group), topic.to_string());
        blocking(move || {
            let list = producer.client().fetch_group_list(Some(&id), Duration::from_secs(10)).map_err(err)?;
            let mut consumers = Vec::new();
            for g in list.groups().iter().filter(|g| g.name() == id) {
                for member in g.members() {
                    // Workers name their Kafka client after themselves.
                    let mut c = ConsumerInfo::named(match member.client_id() {
                        "" | "rdkafka" => member.id(),
                        name => name,
                    });
                    c.partitions = member.assignment().map(|a| assigned_partitions(a, &topic)).unwrap_or_default();
                    consumers.push(c);
                }
            }
            Ok(consumers)
        })
        .await
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        self.ensure_group(topic, group).await?;
        let views = Arc::clone(&self.dead_letters);
        let (dlq, t, g, after) =
            (dlq_topic(topic, group), topic.to_string(), group.to_string(), after.map(String::from));
        blocking(move || views.list(&dlq, &t, &g, after.as_deref(), limit)).await
    }

    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.check_open()?;
        self.ensure_group(topic, group).await?;
        let views = Arc::clone(&self.dead_letters);
        let (dlq, t, g, wanted) = (dlq_topic(topic, group), topic.to_string(), group.to_string(), ids.to_vec());
        let letters = blocking(move || views.select(&dlq, &t, &g, Some(&wanted))).await?;
        if letters.is_empty() {
            return Ok(0);
        }
        // To this group's own due-now retry topic: never re-fanned-out to other groups.
        let target = retry_topic(topic, group, 0);
        let fresh: Vec<Message> = letters.iter().map(|d| dead_letter::redriven(d.message.clone())).collect();
        let headers: Vec<Vec<(String, String)>> = fresh.iter().map(wire::encode_headers).collect();
        let records: Vec<Record<'_>> = fresh
            .iter()
            .zip(&headers)
            .map(|(m, h)| Record {
                topic: &target,
                key: m.key.as_deref().map(str::as_bytes),
                headers: h,
                payload: &m.payload,
            })
            .collect();
        self.outbox.send_all(&records).await?;
        let moved: Vec<String> = letters.into_iter().map(|d| d.id).collect();
        self.remove_dead_letters(&dlq_topic(topic, group), &moved).await?;
        Ok(moved.len())
    }

    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.check_open()?;
        self.ensure_group(topic, group).await?;
        let views = Arc::clone(&self.dead_letters);
        let (dlq, t, g, wanted) =
            (dlq_topic(topic, group), topic.to_string(), group.to_string(), ids.map(<[String]>::to_vec));
        let letters = blocking(move || views.select(&dlq, &t, &g, wanted.as_deref())).await?;
        let gone: Vec<String> = letters.into_iter().map(|d| d.id).collect();
        if !gone.is_empty() {
            self.remove_dead_letters(&dlq_topic(topic, group), &gone).await?;
        }
        Ok(gone.len())
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

/// A group's figures from the broker: committed offsets and delivery
/// records beside each partition's watermarks, over the topic and its
/// retry and delay topics.
fn group_figures(
    producer: &FutureProducer,
    inspector: &BaseConsumer,
    topic: &str,
    group: &str,
) -> std::result::Result<GroupStats, KafkaError> {
    let t = Duration::from_secs(10);
    let md = producer.client().fetch_metadata(None, t)?;
    let partitions: HashMap<&str, usize> = md.topics().iter().map(|t| (t.name(), t.partitions().len())).collect();
    // Which figure each topic's messages count towards.
    let mut sources: Vec<(String, bool)> = vec![(topic.to_string(), true), (retry_topic(topic, group, 0), true)];
    for level in LEVELS {
        sources.push((delay_topic(topic, level), false));
        if level > 0 {
            sources.push((retry_topic(topic, group, level), false));
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (name, _) in &sources {
        for p in 0..partitions.get(name.as_str()).copied().unwrap_or(0) {
            tpl.add_partition(name, p as i32);
        }
    }
    let committed = inspector.committed_offsets(tpl, t)?;
    let mut stats =
        GroupStats { topic: topic.to_string(), group: group.to_string(), in_flight: Some(0), ..Default::default() };
    for (name, ready_now) in &sources {
        for p in 0..partitions.get(name.as_str()).copied().unwrap_or(0) {
            let p = p as i32;
            let (low, high) = inspector.fetch_watermarks(name, p, t)?;
            let elem = committed.find_partition(name, p);
            let offset = elem.as_ref().and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0);
            let start = offset.unwrap_or(low).max(low).min(high);
            let marks = elem.as_ref().map(|e| Marks::parse(e.metadata())).unwrap_or_default();
            let handed = marks.through().map_or(0, |t| (t + 1).clamp(start, high) - start);
            let rest = (high - start - handed).max(0) as u64;
            *stats.in_flight.get_or_insert(0) += handed as u64;
            if *ready_now {
                stats.ready += rest;
            } else {
                stats.waiting += rest;
            }
            if name == topic {
                stats.partitions.push(PartitionLag { partition: p, committed: offset, end: high, lag: high - start });
            }
        }
    }
    Ok(stats)
}

/// A partition without a known leader (a topic just created, a leader
/// moving): worth asking again in a moment.
fn leader_unknown(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

/// The partitions of `topic` in a member's assignment, as the consumer
/// protocol encodes it: version (i16), then per topic its name (i16 length,
/// bytes) and partitions (i32 count, i32 each); user data follows.
fn assigned_partitions(assignment: &[u8], topic: &str) -> Vec<i32> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn i16_of(b: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(b, 2)?.try_into().ok()?))
    }
    fn i32_of(b: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(b, 4)?.try_into().ok()?))
    }
    let parse = |mut b: &[u8]| -> Option<Vec<i32>> {
        i16_of(&mut b)?;
        let mut mine = Vec::new();
        for _ in 0..i32_of(&mut b)?.max(0) {
            let len = i16_of(&mut b)?.max(0) as usize;
            let name = take(&mut b, len)?;
            for _ in 0..i32_of(&mut b)?.max(0) {
                let p = i32_of(&mut b)?;
                if name == topic.as_bytes() {
                    mine.push(p);
                }
            }
        }
        mine.sort_unstable();
        Some(mine)
    };
    parse(assignment).unwrap_or_default()
}

#[cfg(test)]
mod assignment_tests {
    use super::assigned_partitions;

    #[test]
    fn the_topics_partitions_are_read_from_an_assignment() {
        let mut b = vec![0, 0]; // version
        b.extend(2i32.to_be_bytes()); // two topics
        for (name, parts) in [("orders", &[2i32, 0][..]), ("orders.retry", &[0i32][..])] {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(assigned_partitions(&b, "orders"), vec![0, 2]);
        assert_eq!(assigned_partitions(&b, "other"), Vec::<i32>::new());
        assert_eq!(assigned_partitions(&b[..5], "orders"), Vec::<i32>::new(), "a truncated assignment reads as none");
    }
}
