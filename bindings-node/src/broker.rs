//! `connect()` and the native `Broker`: every method a Promise.

use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, BufferSlice, Either, Result, Uint32Array};
use napi::Env;
use napi_derive::napi;
use pillarbox::dead_letter::{self, RedriveOptions};
use pillarbox::Message;

use crate::completions::Completions;
use crate::errors::{invalid_message, OrThrow};
use crate::message::{DeadLetter, DeadLetterFilter, GroupStats, MessageInput};

/// Connects to the broker `url` names.
#[napi]
pub async fn connect(url: String) -> Result<Broker> {
    let broker = pillarbox::connect(&url).await.or_throw()?;
    Ok(Broker { redacted: pillarbox::url::redact(&url), inner: broker })
}

/// What a backend can do.
#[napi(object)]
pub struct Capabilities {
    pub max_message_bytes: f64,
    pub delayed_delivery: bool,
    pub ordered_delivery: bool,
    pub replay_for_new_groups: bool,
    pub leases: bool,
    pub owned_partitions: bool,
    pub stats_delay_ms: f64,
}

#[napi]
pub struct Broker {
    pub(crate) inner: Arc<dyn pillarbox::Broker>,
    redacted: String,
}

#[napi]
impl Broker {
    #[napi(getter)]
    pub fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    /// The URL with its credentials redacted.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.redacted.clone()
    }

    #[napi]
    pub fn capabilities(&self) -> Capabilities {
        let c = self.inner.capabilities();
        Capabilities {
            max_message_bytes: c.max_message_bytes as f64,
            delayed_delivery: c.delayed_delivery,
            ordered_delivery: c.ordered_delivery,
            replay_for_new_groups: c.replay_for_new_groups,
            leases: c.leases,
            owned_partitions: c.owned_partitions,
            stats_delay_ms: c.stats_delay.as_secs_f64() * 1000.0,
        }
    }

    #[napi]
    pub async fn ensure_group(&self, topic: String, group: String) -> Result<()> {
        self.inner.ensure_group(&topic, &group).await.or_throw()
    }

    /// Publishes a batch; `ticket` settles with the ids once the broker has
    /// every one (see `Completions`).
    #[napi]
    pub fn publish(
        &self,
        env: &Env,
        topic: String,
        messages: Vec<Either<Buffer, MessageInput>>,
        completions: &Completions,
        ticket: u32,
    ) -> Result<()> {
        let batch = messages
            .into_iter()
            .map(|m| match m {
                Either::A(payload) => Ok(Message::new(Vec::from(payload))),
                Either::B(input) => input.into_message(),
            })
            .collect::<Result<Vec<_>>>()?;
        self.start_publish(env, topic, batch, completions, ticket)
    }

    /// Publishes a batch of bare payloads given as one buffer and each
    /// one's length: the batch crosses in one piece, where a Buffer per
    /// message costs a reference and a type check across the boundary each.
    #[napi]
    pub fn publish_payloads(
        &self,
        env: &Env,
        topic: String,
        payloads: BufferSlice,
        lengths: Uint32Array,
        completions: &Completions,
        ticket: u32,
    ) -> Result<()> {
        let mut rest = &payloads[..];
        let mut batch = Vec::with_capacity(lengths.len());
        for &length in lengths.iter() {
            let Some((payload, after)) = rest.split_at_checked(length as usize) else {
                return Err(invalid_message("the payload lengths do not add up to the payloads"));
            };
            batch.push(Message::new(payload.to_vec()));
            rest = after;
        }
        self.start_publish(env, topic, batch, completions, ticket)
    }

    #[napi]
    pub async fn inspect(&self, topic: String, group: String) -> Result<GroupStats> {
        self.inner.inspect(&topic, &group).await.map(GroupStats::from).or_throw()
    }

    #[napi]
    pub async fn groups(&self, topic: String) -> Result<Vec<String>> {
        self.inner.groups(&topic).await.or_throw()
    }

    #[napi]
    pub async fn dead_letters(
        &self,
        topic: String,
        group: String,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<Vec<DeadLetter>> {
        let found = self
            .inner
            .list_dead_letters(
                &topic,
                &group,
                after.as_deref(),
                limit.map_or(pillarbox::dead_letter::DEAD_LETTER_PAGE, |n| n as usize),
            )
            .await;
        Ok(found.or_throw()?.into_iter().map(DeadLetter::from).collect())
    }

    #[napi]
    pub async fn redrive(&self, topic: String, group: String, filter: Option<DeadLetterFilter>) -> Result<u32> {
        let options = RedriveOptions {
            filter: filter.as_ref().map(DeadLetterFilter::to_core).unwrap_or_default(),
            per_second: filter.as_ref().and_then(|f| f.per_second),
            limit: filter.as_ref().and_then(|f| f.limit).map(|n| n as usize),
        };
        let moved = dead_letter::redrive(self.inner.as_ref(), &topic, &group, &options).await.or_throw()?;
        Ok(moved as u32)
    }

    #[napi]
    pub async fn purge(&self, topic: String, group: String, filter: Option<DeadLetterFilter>) -> Result<u32> {
        let filter = filter.as_ref().map(DeadLetterFilter::to_core).unwrap_or_default();
        let deleted = dead_letter::purge(self.inner.as_ref(), &topic, &group, &filter).await.or_throw()?;
        Ok(deleted as u32)
    }

    #[napi]
    pub async fn close(&self) -> Result<()> {
        self.inner.close().await.or_throw()
    }
}

impl Broker {
    /// The core's broker.
    pub(crate) fn core(&self) -> Arc<dyn pillarbox::Broker> {
        Arc::clone(&self.inner)
    }

    /// The backend's schedule store, or `UNSUPPORTED`.
    pub(crate) fn schedule_store(&self) -> Result<Arc<dyn pillarbox::schedule::ScheduleStore>> {
        let b = &self.inner;
        b.schedule_store()
            .ok_or(pillarbox::Error::Unsupported { backend: b.backend(), capability: "schedules" })
            .or_throw()
    }

    /// Publishes `batch` on the runtime; `ticket` settles with the ids.
    fn start_publish(
        &self,
        env: &Env,
        topic: String,
        batch: Vec<Message>,
        completions: &Completions,
        ticket: u32,
    ) -> Result<()> {
        let broker = Arc::clone(&self.inner);
        completions.start(env, ticket, async move {
            let ids = batch.iter().map(|m| m.id.clone()).collect();
            broker.publish(&topic, batch).await.or_throw()?;
            Ok(ids)
        })
    }
}
