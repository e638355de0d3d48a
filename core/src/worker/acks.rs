//! Finished messages on their way from the handler loops to the acker.
//!
//! A bounded batch queue: handler loops push one at a time, the acker takes
//! everything gathered at once. A push is one uncontended lock, where a
//! bounded channel also takes and gives back a semaphore permit per item
//! (whose release locks the channel's waiter list every time).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::dispatch::Slot;
use super::policy::lost;
use super::stats::bump;
use super::Inner;
use crate::broker::Delivery;
use crate::error::Error;

pub(super) struct AckQueue<T> {
    state: Mutex<State<T>>,
    /// The first item arrived, or `fill` did, or the queue closed.
    arrived: Notify,
    /// The acker took a batch: there is room again.
    room: Notify,
    /// At most this many wait; a handler loop past it waits for room
    /// (acks falling behind hold back handling, and so receiving).
    bound: usize,
    /// A batch the acker waits (up to its linger) to gather.
    fill: usize,
    /// Most items taken at once.
    most: usize,
}

/// Closes its queue when dropped.
pub(super) struct CloseOnDrop<T>(std::sync::Arc<AckQueue<T>>);

impl<T> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct State<T> {
    items: Vec<T>,
    closed: bool,
}

impl<T> AckQueue<T> {
    pub fn new(bound: usize, fill: usize, most: usize) -> Self {
        AckQueue {
            state: Mutex::new(State { items: Vec::new(), closed: false }),
            arrived: Notify::new(),
            room: Notify::new(),
            bound: bound.max(1),
            fill: fill.clamp(1, most.max(1)),
            most: most.max(1),
        }
    }

    /// Adds an item, waiting while the queue is full.
    pub async fn push(&self, item: T) {
        let mut item = Some(item);
        loop {
            // Listening before looking: room made after the look wakes us.
            let room = self.room.notified();
            tokio::pin!(room);
            let len = {
                let mut st = self.state.lock().unwrap();
                if st.items.len() < self.bound {
                    st.items.push(item.take().expect("pushed once"));
                    Some(st.items.len())
                } else {
                    room.as_mut().enable();
                    None
                }
            };
            match len {
                // The acker waits for the first item, or for a full batch.
                Some(len) => {
                    if len == 1 || len == self.fill {
                        self.arrived.notify_one();
                    }
                    return;
                }
                None => room.await,
            }
        }
    }

    /// No more pushes: the acker takes what is left, then stops.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.arrived.notify_one();
    }

    /// Closes the queue when the returned guard is dropped.
    pub fn close_on_drop(self: &std::sync::Arc<Self>) -> CloseOnDrop<T> {
        CloseOnDrop(std::sync::Arc::clone(self))
    }

    /// The next batch into `out` (empty before): waits for a first item,
    /// then up to `linger` for `fill` of them. False once the queue is
    /// closed and empty.
    pub async fn next_batch(&self, linger: std::time::Duration, out: &mut Vec<T>) -> bool {
        let mut until: Option<Instant> = None;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut st = self.state.lock().unwrap();
                let len = st.items.len();
                if len == 0 && st.closed {
                    return false;
                }
                let lingered = until.is_some_and(|u| Instant::now() >= u);
                if len > 0 && (len >= self.fill || st.closed || lingered) {
                    if len <= self.most {
                        std::mem::swap(&mut st.items, out);
                    } else {
                        out.extend(st.items.drain(..self.most));
                    }
                    drop(st);
                    self.room.notify_waiters();
                    return true;
                }
                if len > 0 && until.is_none() {
                    until = Some(Instant::now() + linger);
                }
            }
            match until {
                Some(u) => {
                    let _ = tokio::time::timeout_at(u, arrived).await;
                }
                None => arrived.await,
            }
        }
    }
}

// --- the acker -------------------------------------------------------------------

/// Most deliveries acked in one call.
pub(super) const ACK_BATCH: usize = 256;
/// How long the acker waits for a batch to fill where the broker pushes
/// ahead. Elsewhere it does not wait: while one ack call (a round trip) is
/// out, the next batch gathers by itself.
const ACK_LINGER: Duration = Duration::from_millis(1);

/// Acks finished messages in batches: whatever is waiting, up to
/// `ACK_BATCH`. Where the broker pushes ahead, an ack costs it work per
/// call (on RabbitMQ each ack frame is a quorum-queue command) rather than
/// a round trip here: the batch waits up to `ACK_LINGER` to reach half the
/// worker's capacity, so the broker refills half the window at a time
/// while the other half is handled.
pub(super) async fn ack_loop(inner: Arc<Inner>, acks: Arc<AckQueue<Slot>>) {
    use futures_util::FutureExt;
    let mut batch = Vec::new();
    while acks.next_batch(ACK_LINGER, &mut batch).await {
        // Settling now: the lease keeper can let go.
        if batch.iter().any(|slot| slot.held) {
            let mut held = inner.held.lock().unwrap();
            for slot in batch.iter().filter(|slot| slot.held) {
                held.remove(&slot.id);
            }
        }
        let handled = batch.iter().filter(|slot| slot.handled).count();
        let deliveries: Vec<Delivery> = batch.drain(..).map(|slot| slot.delivery).collect();
        // A backend that panics here (a bug) must not end the acker: handler
        // loops would then wait for room in its queue forever.
        let acked = std::panic::AssertUnwindSafe(inner.broker.ack(&deliveries)).catch_unwind().await;
        match acked {
            Ok(Ok(())) => bump(&inner.counters.succeeded, handled as u64),
            Ok(Err(Error::LeaseLost { message_id, count })) => {
                bump(&inner.counters.succeeded, handled.saturating_sub(count) as u64);
                lost(&inner, count, &Error::LeaseLost { message_id, count });
            }
            Ok(Err(e)) => {
                // The handlers did succeed; the broker will deliver them again.
                bump(&inner.counters.succeeded, handled as u64);
                bump(&inner.counters.settle_errors, 1);
                tracing::warn!(error = %e, "ack failed; the message will be delivered again and skipped if it has an idempotency key");
            }
            Err(_) => {
                bump(&inner.counters.succeeded, handled as u64);
                bump(&inner.counters.settle_errors, 1);
                tracing::error!("the broker's ack panicked (a bug); the messages will be delivered again");
            }
        }
        inner.broker.dispose(deliveries);
    }
}

/// The batch the acker waits (up to `ACK_LINGER`) to gather: half the
/// worker's capacity where the broker pushes ahead, else none.
pub(super) fn ack_fill(inner: &Inner) -> usize {
    if inner.broker.capabilities().pushes_ahead {
        // A broker that pushes ahead keeps the window its consumer started
        // with: with a read-ahead that follows the handlers, that is the
        // handlers alone (nothing is known of their pace yet).
        let window = if inner.read_ahead.adapts() { inner.options.concurrency } else { inner.capacity };
        (window / 2).clamp(1, ACK_BATCH)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_batch_waits_for_fill_up_to_the_linger() {
        let q = AckQueue::new(100, 3, 10);
        q.push(1).await;
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        assert!(q.next_batch(Duration::from_millis(50), &mut out).await);
        assert_eq!(out, vec![1], "one item, after the linger");
        assert!(started.elapsed() >= Duration::from_millis(45));
        out.clear();
        for i in 0..3 {
            q.push(i).await;
        }
        let started = std::time::Instant::now();
        assert!(q.next_batch(Duration::from_secs(5), &mut out).await);
        assert_eq!(out, vec![0, 1, 2], "a full batch goes at once");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn batches_are_capped_and_closing_drains_what_is_left() {
        let q = AckQueue::new(100, 1, 4);
        for i in 0..6 {
            q.push(i).await;
        }
        q.close();
        let mut out = Vec::new();
        assert!(q.next_batch(Duration::from_secs(5), &mut out).await);
        assert_eq!(out, vec![0, 1, 2, 3]);
        out.clear();
        assert!(q.next_batch(Duration::from_secs(5), &mut out).await);
        assert_eq!(out, vec![4, 5]);
        out.clear();
        assert!(!q.next_batch(Duration::from_secs(5), &mut out).await, "closed and empty");
    }

    #[tokio::test]
    async fn a_full_queue_holds_pushes_back_until_the_acker_takes() {
        let q = Arc::new(AckQueue::new(2, 1, 10));
        q.push(1).await;
        q.push(2).await;
        let pusher = tokio::spawn({
            let q = Arc::clone(&q);
            async move { q.push(3).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pusher.is_finished(), "waits for room");
        let mut out = Vec::new();
        assert!(q.next_batch(Duration::from_secs(5), &mut out).await);
        assert_eq!(out, vec![1, 2]);
        tokio::time::timeout(Duration::from_secs(5), pusher).await.unwrap().unwrap();
        out.clear();
        assert!(q.next_batch(Duration::from_secs(5), &mut out).await);
        assert_eq!(out, vec![3]);
    }

    #[tokio::test]
    async fn the_acker_wakes_for_an_item_pushed_while_it_waits() {
        let q = Arc::new(AckQueue::new(10, 1, 10));
        let acker = tokio::spawn({
            let q = Arc::clone(&q);
            async move {
                let mut out = Vec::new();
                q.next_batch(Duration::from_secs(5), &mut out).await;
                out
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.push(7).await;
        let out = tokio::time::timeout(Duration::from_secs(5), acker).await.unwrap().unwrap();
        assert_eq!(out, vec![7]);
    }
}
