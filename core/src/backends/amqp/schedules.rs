//! The RabbitMQ schedule store, with nothing but the broker. The table of
//! schedules (see [`ScheduleTable`]) is one persistent message in the
//! durable queue `pb.schedules`; every call reads it, changes it and
//! writes it back while holding a lock: the exclusive queue
//! `pb.schedules.lock`, which one connection at a time can declare and
//! which RabbitMQ deletes when that connection closes or dies, so a
//! process killed holding it frees it at once. Calls are serialised across
//! processes (and, by a mutex, within one).
//!
//! A change publishes the new table, waits for the broker's confirm, then
//! acks the old one: a crash in between leaves both, and the next reader
//! takes the one with the higher version.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::broker::Nodes;
use super::{err, BACKEND};
use crate::error::{Error, Result};
use crate::schedule::{Finished, Schedule, ScheduleStore, ScheduleTable, Stored, TickClaim, Upserted};

const TABLE: &str = "pb.schedules";
const LOCK: &str = "pb.schedules.lock";
const VERSION: &str = "pb-version";
/// How long a call waits for another process to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Schedules kept in RabbitMQ.
pub struct AmqpScheduleStore {
    nodes: Arc<Nodes>,
    /// This store's own connection (the lock is held by a connection), made
    /// on first use and again after it drops; the mutex also serialises
    /// this process's calls.
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl std::fmt::Debug for AmqpScheduleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpScheduleStore").field("url", &self.nodes.url()).finish()
    }
}

fn is_locked(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 405)
}

impl AmqpScheduleStore {
    pub(super) fn new(nodes: Arc<Nodes>) -> Self {
        AmqpScheduleStore { nodes, connection: tokio::sync::Mutex::new(None) }
    }

    /// Closes its connection, if it made one.
    pub(super) async fn close(&self) {
        if let Some(c) = self.connection.lock().await.take() {
            let _ = c.close(200, "closed".into()).await;
        }
    }

    /// Reads the table under the lock, lets `change` change it (saying
    /// whether it did), and writes it back if it did.
    async fn update<T>(&self, change: impl FnOnce(&mut ScheduleTable) -> Result<(T, bool)>) -> Result<T> {
        let mut connection = self.connection.lock().await;
        if connection.as_ref().is_none_or(|c| !c.status().connected()) {
            *connection = Some(self.nodes.dial().await?);
        }
        let conn = connection.as_ref().expect("connected above");
        let channel = lock(conn).await?;
        let result = change_table(&channel, change).await;
        let released = channel.queue_delete(LOCK.into(), QueueDeleteOptions::default()).await;
        let _ = channel.close(200, "done".into()).await;
        if released.is_err() {
            // Dropping the connection frees the lock for sure.
            if let Some(c) = connection.take() {
                let _ = c.close(200, "lock not released".into()).await;
            }
        }
        result
    }
}

/// A channel on `conn` holding the lock: declares the exclusive lock
/// queue, again and again while another connection holds it.
async fn lock(conn: &Connection) -> Result<Channel> {
    let deadline = Instant::now() + LOCK_WAIT;
    let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    loop {
        let channel = conn.create_channel().await.map_err(err)?;
        match channel.queue_declare(LOCK.into(), exclusive, FieldTable::default()).await {
            Ok(_) => return Ok(channel),
            // The broker closed the channel; the next try takes a new one.
            Err(e) if is_locked(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(5..30))).await;
            }
            Err(e) if is_locked(&e) => {
                return Err(Error::Timeout { operation: "waiting for the schedules' lock", after: LOCK_WAIT });
            }
            Err(e) => return Err(err(e)),
        }
    }
}

async fn change_table<T>(channel: &Channel, change: impl FnOnce(&mut ScheduleTable) -> Result<(T, bool)>) -> Result<T> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(TABLE.into(), durable, FieldTable::default()).await.map_err(err)?;
    // Normally one message; two after a writer died between its publish and its ack.
    let mut held = Vec::new();
    let mut newest: Option<(i64, Vec<u8>)> = None;
    while let Some(got) = channel.basic_get(TABLE.into(), BasicGetOptions::default()).await.map_err(err)? {
        let version = got
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(VERSION).cloned())
            .and_then(|v| match v {
                AMQPValue::LongLongInt(n) => Some(n),
                _ => None,
            })
            .unwrap_or(0);
        held.push(got.delivery.delivery_tag);
        if newest.as_ref().is_none_or(|(v, _)| version > *v) {
            newest = Some((version, got.delivery.data));
        }
    }
    let (version, mut table) = match newest {
        Some((version, bytes)) => (version, ScheduleTable::decode(&bytes)?),
        None => (0, ScheduleTable::default()),
    };
    let (out, changed) = match change(&mut table) {
        Ok(done) => done,
        Err(e) => {
            put_back(channel, &held).await?;
            return Err(e);
        }
    };
    if !changed {
        put_back(channel, &held).await?;
        return Ok(out);
    }
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(err)?;
    let mut headers = FieldTable::default();
    headers.insert(VERSION.into(), AMQPValue::LongLongInt(version + 1));
    let confirm = channel
        .basic_publish(
            "".into(),
            TABLE.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &table.encode(),
            BasicProperties::default().with_delivery_mode(2).with_headers(headers),
        )
        .await
        .map_err(err)?
        .await
        .map_err(err)?;
    if !matches!(confirm, Confirmation::Ack(None)) {
        return Err(Error::Backend { backend: BACKEND, reason: "the broker did not keep the schedules".into() });
    }
    for tag in held {
        channel.basic_ack(tag, BasicAckOptions::default()).await.map_err(err)?;
    }
    Ok(out)
}

/// Gives back the table unchanged.
async fn put_back(channel: &Channel, held: &[u64]) -> Result<()> {
    for tag in held {
        channel.basic_reject(*tag, BasicRejectOptions { requeue: true }).await.map_err(err)?;
    }
    Ok(())
}

#[async_trait]
impl ScheduleStore for AmqpScheduleStore {
    async fn upsert(&self, schedule: &Schedule) -> Result<Upserted> {
        schedule.check()?;
        self.update(|table| {
            let upserted = table.upsert(schedule, SystemTime::now())?;
            Ok((upserted, upserted != Upserted::Unchanged))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Stored>> {
        self.update(|table| Ok((table.list(), false))).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        self.update(|table| {
            let found = table.set_paused(name, paused, SystemTime::now());
            Ok((found, found))
        })
        .await
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        self.update(|table| {
            let found = table.remove(name);
            Ok((found, found))
        })
        .await
    }

    async fn claim(&self, claims: &[TickClaim], owner: &str, lease: Duration) -> Result<Vec<bool>> {
        self.update(|table| {
            let held = table.claim(claims, owner, lease, SystemTime::now());
            let any = held.iter().any(|h| *h);
            Ok((held, any))
        })
        .await
    }

    async fn finish(&self, owner: &str, finished: &[Finished]) -> Result<()> {
        self.update(|table| {
            table.finish(owner, finished);
            Ok(((), !finished.is_empty()))
        })
        .await
    }
}
