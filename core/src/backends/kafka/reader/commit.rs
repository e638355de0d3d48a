//! Settling and committing: which deliveries the reader still holds, and
//! the commits that move each partition's offset and delivery record, at
//! once or in the background. Separate: the acker's path, not the
//! receive's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::TopicPartitionList;

use super::assignment::{add_commit, finish_revocation};
use super::incoming::KafkaReceipt;
use super::Reader;
use crate::backends::kafka::{err, BACKEND};
use crate::error::{Error, Result};

/// How long a background commit waits for more settlements to share it.
/// Commits share the broker connection with fetches: fewer, larger ones
/// keep the fetches flowing.
const COMMIT_LINGER: Duration = Duration::from_millis(10);

impl Reader {
    /// Whether the delivery is still this consumer's to settle.
    pub fn holds(&self, r: &KafkaReceipt) -> bool {
        let st = self.state.lock().unwrap();
        st.parts
            .get(&(Arc::clone(&r.topic), r.partition))
            .is_some_and(|t| t.epoch == r.epoch && t.outstanding.get(r.offset) == Some(false))
    }

    /// Marks the delivery settled; false when it was not held.
    pub fn settle(&self, r: &KafkaReceipt) -> bool {
        self.state.lock().unwrap().settle_all(&[r]).is_none()
    }

    /// Marks deliveries settled under one look at the state; returns the
    /// position of the first that was not held.
    pub fn settle_all(&self, receipts: &[&KafkaReceipt]) -> Option<usize> {
        self.state.lock().unwrap().settle_all(receipts)
    }

    /// Commits every partition whose commit point or delivery record moved.
    /// A failed commit (a rebalance in progress) stays pending and is tried
    /// again by the next call.
    pub async fn commit(self: &Arc<Self>) -> Result<()> {
        let _one_at_a_time = self.commit_lock.lock().await;
        let mut tpl = TopicPartitionList::new();
        let mut wanted = Vec::new();
        {
            let mut st = self.state.lock().unwrap();
            // Leaving: the record says exactly what was handed out.
            let ahead = if self.closed.load(Ordering::SeqCst) { 0 } else { self.ahead.load(Ordering::Relaxed) };
            for (part, t) in st.parts.iter_mut() {
                if let Some(w) = t.wanted(ahead) {
                    add_commit(&mut tpl, part, w.commit.0, w.commit.1.clone());
                    wanted.push((part.clone(), t.epoch, w));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || this.consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| Error::Backend { backend: BACKEND, reason: e.to_string() })?;
        result.map_err(err)?;
        let mut st = self.state.lock().unwrap();
        for (part, epoch, done) in wanted {
            if let Some(t) = st.parts.get_mut(&part).filter(|t| t.epoch == epoch) {
                t.committed = Some(done.commit);
                t.recorded_through = done.claim;
            }
        }
        drop(st);
        finish_revocation(&self.consumer, &self.state, false);
        Ok(())
    }

    /// Commits in the background; calls made while one is queued share it.
    pub fn commit_soon(self: &Arc<Self>) {
        if self.commit_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Settlements of the next few milliseconds share this commit.
            tokio::time::sleep(COMMIT_LINGER).await;
            this.commit_queued.store(false, Ordering::SeqCst);
            if let Err(e) = this.commit().await {
                tracing::debug!(error = %e, "commit failed; retried with the next one");
            }
        });
    }

    /// Moves the delivery record ahead in the background, at once.
    pub(super) fn record_ahead(self: &Arc<Self>) {
        if self.record_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.record_queued.store(false, Ordering::SeqCst);
            if let Err(e) = this.commit().await {
                tracing::debug!(error = %e, "commit failed; retried with the next one");
            }
        });
    }

    /// Completes a revocation whose deadline passed (called on every tick).
    pub fn tick(&self) {
        finish_revocation(&self.consumer, &self.state, false);
    }
}
