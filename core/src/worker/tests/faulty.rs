//! A broker for the worker's tests: the in-memory one, with faults and
//! counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::broker::{Broker, Delivery, ReceiveRequest};
use crate::dead_letter::DeadLetterReason;
use crate::error::{Error, Result};
use crate::message::Message;

/// The in-memory broker, with faults: its first `failures` receives
/// fail and its first `panics` acks panic; with `leases` false it says
/// it has no leases to renew (as RabbitMQ and Kafka).
#[derive(Debug)]
pub(super) struct FaultyBroker {
    pub(super) inner: Arc<dyn Broker>,
    pub(super) failures: AtomicUsize,
    pub(super) panics: AtomicUsize,
    pub(super) leases: bool,
    pub(super) owned_partitions: bool,
    pub(super) pushes_ahead: bool,
    /// The next receive that gets messages says so on `holding`, then
    /// waits for `go_on` before returning them.
    pub(super) hold_once: AtomicBool,
    pub(super) holding: Notify,
    pub(super) go_on: Notify,
    /// The most one receive returned.
    pub(super) largest_receive: AtomicUsize,
    /// Receives that returned messages.
    pub(super) receives: AtomicUsize,
    /// When each message (by id) was last received.
    pub(super) received_at: Mutex<HashMap<String, std::time::Instant>>,
}

impl FaultyBroker {
    pub(super) fn new(inner: Arc<dyn Broker>, failures: usize, panics: usize) -> Self {
        FaultyBroker {
            inner,
            failures: AtomicUsize::new(failures),
            panics: AtomicUsize::new(panics),
            leases: true,
            owned_partitions: false,
            pushes_ahead: false,
            hold_once: AtomicBool::new(false),
            holding: Notify::new(),
            go_on: Notify::new(),
            largest_receive: AtomicUsize::new(0),
            receives: AtomicUsize::new(0),
            received_at: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl Broker for FaultyBroker {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> crate::broker::Capabilities {
        crate::broker::Capabilities {
            leases: self.leases,
            owned_partitions: self.owned_partitions,
            pushes_ahead: self.pushes_ahead || self.inner.capabilities().pushes_ahead,
            ..self.inner.capabilities()
        }
    }
    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        self.inner.ensure_group(topic, group).await
    }
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.inner.publish(topic, messages).await
    }
    async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: bytes::Bytes) -> Result<()> {
        self.inner.publish_raw(topic, headers, payload).await
    }
    async fn receive(&self, request: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(Error::Backend { backend: "test", reason: "receive failed".into() });
        }
        let got = self.inner.receive(request).await?;
        self.largest_receive.fetch_max(got.len(), Ordering::SeqCst);
        self.receives.fetch_add(usize::from(!got.is_empty()), Ordering::SeqCst);
        let now = std::time::Instant::now();
        self.received_at.lock().unwrap().extend(got.iter().map(|d| (d.message.id.clone(), now)));
        if !got.is_empty() && self.hold_once.swap(false, Ordering::SeqCst) {
            self.holding.notify_one();
            self.go_on.notified().await;
        }
        Ok(got)
    }
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        if self.panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("ack panicked");
        }
        self.inner.ack(deliveries).await
    }
    async fn extend_leases(&self, deliveries: &[Delivery], lease: Duration) -> Result<()> {
        self.inner.extend_leases(deliveries, lease).await
    }
    async fn release(&self, deliveries: &[Delivery]) -> Result<()> {
        self.inner.release(deliveries).await
    }
    fn dispose(&self, deliveries: Vec<Delivery>) {
        self.inner.dispose(deliveries)
    }
    async fn retry(&self, delivery: &Delivery, next: Message) -> Result<()> {
        self.inner.retry(delivery, next).await
    }
    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.inner.dead_letter(delivery, reason).await
    }
    async fn inspect(&self, topic: &str, group: &str) -> Result<crate::broker::GroupStats> {
        self.inner.inspect(topic, group).await
    }
    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.inner.groups(topic).await
    }
    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::dead_letter::DeadLetter>> {
        self.inner.list_dead_letters(topic, group, after, limit).await
    }
    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.inner.redrive_dead_letters(topic, group, ids).await
    }
    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.inner.purge_dead_letters(topic, group, ids).await
    }
}
