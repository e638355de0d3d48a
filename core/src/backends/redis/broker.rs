//! The Redis `Broker`: the connections a handle holds, and the trait
//! implementation, which hands each operation to the file of its concept:
//! `options` (the URL's options), `topology` (consumer groups), `publish`,
//! `receive` (the mover, claims and reads), `settle` (acks, lease
//! extensions, retries, trimming), `dead_letters`, `inspect`, and `reply`
//! (parsing Redis's replies).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::connection::{Client, Conn};
use super::idempotency::RedisIdempotencyStore;
use super::options::Options;
use super::receive::GroupState;
use super::reply::xinfo_groups;
use super::{TopicKeys, BACKEND};
use crate::backends::shared;
use crate::broker::{Broker, Capabilities, ConsumerInfo, Delivery, GroupStats, ReceiveRequest};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::idempotency::IdempotencyStore;
use crate::message::{to_millis, validate_name, Message};
use crate::url::BrokerUrl;

/// Longest a single blocking read may take (sets the blocking connections' timeout).
const MAX_BLOCK: Duration = Duration::from_secs(5);

/// A Redis connection for one URL.
pub struct RedisBroker {
    client: Client,
    conn: Conn,
    /// Connections for blocking reads, which must not hold up other commands.
    pub(super) blocking: Mutex<Vec<Conn>>,
    pub(super) options: Options,
    url: String,
    pub(super) groups_ready: Mutex<HashSet<(String, String)>>,
    pub(super) last_claim: Mutex<HashMap<(String, String), Instant>>,
    pub(super) group_state: Mutex<HashMap<(String, String), GroupState>>,
    pub(super) last_trim: Mutex<HashMap<String, Instant>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker").field("url", &self.url).finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects to `redis://` or `rediss://`.
    pub async fn connect(url: &BrokerUrl) -> Result<Self> {
        let options = Options::from_url(url)?;
        let (client, conn) = Client::connect(url, &options).await?;
        Ok(RedisBroker {
            client,
            conn,
            blocking: Mutex::new(Vec::new()),
            options,
            url: url.redacted(),
            groups_ready: Mutex::new(HashSet::new()),
            last_claim: Mutex::new(HashMap::new()),
            group_state: Mutex::new(HashMap::new()),
            last_trim: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        })
    }

    pub(super) fn check_open(&self) -> Result<()> {
        shared::check_open(&self.closed)
    }

    pub(super) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    pub(super) async fn blocking_conn(&self) -> Result<Conn> {
        if let Some(c) = self.blocking.lock().unwrap().pop() {
            return Ok(c);
        }
        let wait = MAX_BLOCK + self.options.response_timeout;
        self.client.blocking(self.options.connect_timeout, wait).await.map_err(|e| Error::Connect {
            backend: BACKEND,
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }
}

pub(super) fn now_ms() -> u64 {
    to_millis(SystemTime::now())
}

#[async_trait]
impl Broker for RedisBroker {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_bytes: self.options.max_message_bytes,
            delayed_delivery: true,
            ordered_delivery: true,
            replay_for_new_groups: true,
            leases: true,
            pushes_ahead: false,
            owned_partitions: false,
            oldest_age: true,
            stats_delay: Duration::ZERO,
        }
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        self.create_group(&TopicKeys::new(topic), topic, group).await
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

    async fn extend_leases(&self, deliveries: &[Delivery], _lease: Duration) -> Result<()> {
        self.extend_batch(deliveries).await
    }

    async fn retry(&self, delivery: &Delivery, next: Message) -> Result<()> {
        self.retry_later(delivery, next).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.dead_letter_one(delivery, reason).await
    }

    async fn consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.list_consumers(topic, group).await
    }

    async fn inspect(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.group_stats(topic, group).await
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.check_open()?;
        validate_name("topic", topic)?;
        let keys = TopicKeys::new(topic);
        let mut names: Vec<String> =
            xinfo_groups(&mut self.conn(), &keys.stream).await?.into_iter().map(|g| g.name).collect();
        names.sort();
        Ok(names)
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

    fn idempotency_store(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(RedisIdempotencyStore::new(self.conn())))
    }

    fn schedule_store(&self) -> Option<Arc<dyn crate::schedule::ScheduleStore>> {
        Some(Arc::new(super::RedisScheduleStore::new(self.conn())))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.blocking.lock().unwrap().clear();
        Ok(())
    }
}
