//! The reading task: reads, decodes and admits messages ahead of the
//! receives, pauses partitions whose head is not due and moves waiting
//! messages on, and withdraws what no receive will take. Separate from the
//! receive and the commits: it alone reads from the consumer.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::assignment::finish_revocation;
use super::incoming::{Body, Incoming, KafkaReceipt, KindCache, Spares};
use super::tracks::Admission;
use super::{Kind, Part, Reader};
use crate::backends::kafka::publish::Outbox;
use crate::backends::kafka::{err, level_for, retry_topic, BACKEND};
use crate::backends::shared;
use crate::broker::Delivery;
use crate::error::{Error, Result};
use crate::message::{from_millis, to_millis};
use crate::wire;

/// How many receives' worth the reading task admits ahead of the receives.
/// At one, it stopped as soon as a receive found its batch ready and
/// started again only once the receive had taken it: each waited for the
/// other (+15% consuming a backlog at three, with the record kept in the
/// background).
pub(super) const READ_AHEAD: usize = 3;

impl Reader {
    /// Starts the reading task once.
    pub(super) fn start_reading(self: &Arc<Self>, outbox: &Outbox) {
        let mut task = self.reading.lock().unwrap();
        if task.is_none() && !self.closed.load(Ordering::SeqCst) {
            *task = Some(tokio::spawn(Arc::clone(self).read(outbox.clone())));
        }
    }

    /// The reading task: reads what there is room for (`READ_AHEAD` times
    /// what the largest receive asked for, minus what waits already),
    /// admits it, and leaves it for the next receives; until the reader
    /// closes. It alone reads from the consumer, so rebalance callbacks,
    /// pauses and seeks happen between its reads, never during one.
    async fn read(self: Arc<Self>, outbox: Outbox) {
        self.read_until_stopped(&outbox).await;
        // Ended (stopped, or the consumer closed): from now on, disposed
        // deliveries are dropped at once.
        self.stop.cancel();
        // Whatever no receive will take now is withdrawn (the close that
        // stopped this task commits without it).
        self.withdraw_ready();
    }

    async fn read_until_stopped(self: &Arc<Self>, outbox: &Outbox) {
        let mut kinds = KindCache::default();
        // Kept from read to read: allocated afresh (tens of kilobytes each
        // time), they made the allocator consolidate its free lists per read.
        let (mut incoming, mut decided, mut admitted) = (Vec::new(), Vec::new(), Vec::new());
        let mut backoff = Duration::from_millis(100);
        let mut finished = Vec::new();
        let mut spares = Spares::default();
        while !self.stop.is_cancelled() {
            // Recycled or freed here, outside the lock.
            std::mem::swap(&mut finished, &mut *self.finished.lock().unwrap());
            spares.recycle(&mut finished);
            // A rebalance (served inside the last read) may be giving up
            // partitions some waiting deliveries came from.
            self.withdraw_revoked();
            finish_revocation(&self.consumer, &self.state, false);
            let room_freed = self.room_freed.notified();
            tokio::pin!(room_freed);
            room_freed.as_mut().enable();
            let room = self.room.load(Ordering::Relaxed).saturating_sub(self.ready.lock().unwrap().deliveries.len());
            if room == 0 {
                tokio::select! {
                    _ = room_freed => continue,
                    // The lease keeper's tick may complete a revocation meanwhile.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = self.stop.cancelled() => return,
                }
            }
            // Wake for a paused partition's head, and every second for a
            // revocation's deadline.
            let now = Instant::now();
            let wake = self.resume_due().map_or(now + Duration::from_secs(1), |w| w.min(now + Duration::from_secs(1)));
            let mut messages = self.consumer.stream();
            let first = tokio::select! {
                first = tokio::time::timeout(wake.saturating_duration_since(now), messages.next()) => first,
                _ = self.stop.cancelled() => return,
            };
            let first = match first {
                Err(_) => continue,
                Ok(Some(Ok(m))) => m,
                Ok(None) => {
                    self.report(Error::Closed);
                    return;
                }
                Ok(Some(Err(e))) => {
                    self.report(err(e));
                    drop(messages);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            // Then what is already here, up to the room.
            incoming.clear();
            incoming.reserve(room.min(1024));
            let mut next = Some(first);
            while let Some(m) = next.take() {
                if let Some((kind, topic)) = kinds.get(m.topic(), &self.kinds) {
                    incoming.push(Incoming::copy(&m, kind, topic, &mut spares));
                }
                drop(m);
                if incoming.len() < room {
                    next = match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => Some(m),
                        _ => None,
                    };
                }
            }
            drop(messages);
            let result = self.admit(&mut incoming, &mut decided, outbox, &mut admitted, &mut spares).await;
            let mut ready = self.ready.lock().unwrap();
            ready.deliveries.extend(admitted.drain(..));
            if let Err(e) = result {
                ready.error.get_or_insert(e);
            }
            drop(ready);
            self.arrived.notify_one();
        }
    }

    /// Takes deliveries the worker is finished with, for the reading task
    /// to free; once it has stopped, they are dropped at once.
    pub fn dispose(&self, mut deliveries: Vec<Delivery>) {
        let mut finished = self.finished.lock().unwrap();
        // Checked under the lock `withdraw_ready` empties the list under,
        // after the stop: nothing is left behind in it.
        if !self.stop.is_cancelled() {
            finished.append(&mut deliveries);
        }
        drop(finished);
        drop(deliveries);
    }

    /// Leaves an error for the next receive.
    fn report(&self, e: Error) {
        self.ready.lock().unwrap().error.get_or_insert(e);
        self.arrived.notify_one();
    }

    /// Stops the reading task and withdraws what it admitted and no receive
    /// took: it was never handed out, and comes again.
    pub(super) async fn stop_reading(&self) {
        self.abandon();
        let task = self.reading.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.withdraw_ready();
    }

    /// Withdraws waiting deliveries of partitions being given up, so the
    /// revocation need not wait for them.
    fn withdraw_revoked(&self) {
        let revoking = {
            let st = self.state.lock().unwrap();
            if st.revoking.is_empty() {
                return;
            }
            st.revoking.clone()
        };
        let withdrawn: VecDeque<Delivery> = {
            let mut ready = self.ready.lock().unwrap();
            let (gone, kept) = std::mem::take(&mut ready.deliveries).into_iter().partition(|d| {
                d.receipt_as::<KafkaReceipt>(BACKEND)
                    .is_ok_and(|r| revoking.iter().any(|p| p.1 == r.partition && p.0 == r.topic))
            });
            ready.deliveries = kept;
            gone
        };
        self.state.lock().unwrap().withdraw(&withdrawn);
    }

    /// Stops the reading task without waiting for it (the broker was dropped
    /// without being closed): it withdraws what it admitted as it ends.
    pub fn abandon(&self) {
        self.stop.cancel();
        self.withdraw_ready();
        // A receive waiting for the task sees the reader closed now.
        self.arrived.notify_waiters();
    }

    /// Withdraws what waits for a receive, and frees what waits to be
    /// freed (also breaks the cycle of their receipts holding this reader).
    fn withdraw_ready(&self) {
        let waiting = std::mem::take(&mut self.ready.lock().unwrap().deliveries);
        self.state.lock().unwrap().withdraw(&waiting);
        drop(std::mem::take(&mut *self.finished.lock().unwrap()));
    }

    /// Resumes partitions whose head is due; returns the next wake-up.
    fn resume_due(&self) -> Option<Instant> {
        let now = SystemTime::now();
        let mut due = TopicPartitionList::new();
        let mut next: Option<Instant> = None;
        {
            let mut st = self.state.lock().unwrap();
            st.paused.retain(|(topic, partition), wake| {
                if *wake <= now {
                    due.add_partition(topic, *partition);
                    false
                } else {
                    let at = Instant::now() + wake.duration_since(now).unwrap_or_default();
                    next = Some(next.map_or(at, |n| n.min(at)));
                    true
                }
            });
        }
        if due.count() > 0 {
            if let Err(e) = self.consumer.resume(&due) {
                tracing::warn!(error = %e, "could not resume partitions");
            }
        }
        next
    }

    /// Decides what to do with each message, in order: hand it out (into
    /// `out`), move it on, or pause its partition until it is due. The
    /// state is looked at once for a run of messages, not once each (the
    /// acker settles under the same lock), and left while a waiting message
    /// is moved on or its partition paused.
    async fn admit(
        self: &Arc<Self>,
        incoming: &mut Vec<Incoming>,
        decided: &mut Vec<Admission>,
        outbox: &Outbox,
        out: &mut Vec<Delivery>,
        spares: &mut Spares,
    ) -> Result<()> {
        // Decided in place (messages are large: not moved more than once).
        decided.clear();
        while decided.len() < incoming.len() {
            self.state.lock().unwrap().admit_all(&incoming[decided.len()..], decided);
            if let Some(Admission::NotDue) = decided.last() {
                self.wait_for_due(&incoming[decided.len() - 1], outbox).await?;
            }
        }
        out.extend(incoming.drain(..).zip(decided.drain(..)).filter_map(|(m, admission)| match admission {
            Admission::HandOut { earlier, epoch } => Some(self.delivery(m, earlier, epoch, spares)),
            Admission::Stale | Admission::NotDue => None,
        }));
        Ok(())
    }

    /// The delivery of a message handed out in `epoch`, delivered `earlier`
    /// times before this assignment.
    pub(super) fn delivery(self: &Arc<Self>, m: Incoming, earlier: u32, epoch: u64, spares: &mut Spares) -> Delivery {
        // Decoded as a first delivery, in the `Arc` only this reader holds
        // (`make_mut` copies nothing): the earlier ones are added here.
        let (mut message, malformed) = match m.body {
            Body::Decoded { message, malformed } => (message, malformed),
            Body::Wire { headers, payload } => {
                let decoded = wire::decode(headers, payload, 1);
                (Arc::new(decoded.message), decoded.malformed)
            }
        };
        let first = Arc::make_mut(&mut message);
        first.attempt = first.attempt.saturating_add(earlier);
        if first.key.is_none() {
            first.key = m.key.map(|k| String::from_utf8_lossy(&k).into_owned());
        }
        shared::fill_published_at(first, || m.timestamp_ms.filter(|t| *t >= 0).map(|ts| from_millis(ts as u64)));
        let receipt =
            KafkaReceipt { reader: Arc::clone(self), topic: m.topic, partition: m.partition, offset: m.offset, epoch };
        Delivery::new(Arc::clone(&self.topic), Arc::clone(&self.group), message, malformed, spares.receipt(receipt))
    }

    /// A waiting message at the head of its partition that is not due:
    /// moves it on if it waited its level's time, else pauses the
    /// partition until it is due.
    async fn wait_for_due(&self, m: &Incoming, outbox: &Outbox) -> Result<()> {
        let part: Part = (Arc::clone(&m.topic), m.partition);
        let level = match m.kind {
            Kind::Delay(level) | Kind::Retry(level) => level,
            Kind::Main => return Ok(()),
        };
        let due = m.deliver_at_ms().unwrap_or(0);
        let Body::Wire { headers, payload } = &m.body else { return Ok(()) };
        let now = to_millis(SystemTime::now());
        let waited = m.timestamp_ms.map_or(u64::MAX, |ts| (ts.max(0) as u64).saturating_add(level));
        let mut wake = if level == 0 { due } else { due.min(waited) };
        if level > 0 && now >= waited {
            // Waited its level's time: on to the level that fits what remains.
            let target = retry_topic(&self.topic, &self.group, level_for(due.saturating_sub(now)));
            match outbox.send(&target, m.key.as_deref(), headers, payload).await {
                Ok(()) => {
                    let mut st = self.state.lock().unwrap();
                    if let Some(t) = st.parts.get_mut(&part) {
                        t.outstanding.insert(m.offset, true);
                        t.next = Some(t.next.map_or(m.offset + 1, |n| n.max(m.offset + 1)));
                    }
                    return Ok(());
                }
                // It stays where it is and is looked at again in a second;
                // what else this receive read is handed out meanwhile.
                Err(e) => {
                    tracing::warn!(error = %e, topic = %target, "could not move a waiting message on; trying again in 1 s");
                    wake = now + 1_000;
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&m.topic, m.partition);
        self.consumer.pause(&tpl).map_err(err)?;
        self.consumer.seek(&m.topic, m.partition, Offset::Offset(m.offset), Duration::ZERO).map_err(err)?;
        self.state.lock().unwrap().paused.insert(part, from_millis(wake));
        Ok(())
    }
}
