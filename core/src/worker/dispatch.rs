//! From the fetcher to the handler loops: the slots messages occupy, the
//! queue they wait in, and the loops that run the policy on each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::acks::AckQueue;
use super::policy::process;
use super::queue::{Keyed, Queue};
use super::Inner;
use crate::broker::Delivery;

/// A received delivery and the receive slot it occupies until its handler
/// is done (acks then go out in batches without holding slots). The
/// delivery is owned, not shared: only what has a lease or claim to renew
/// is also in `Inner::held` (a copy of its handles), so a message on a
/// broker without leases costs no allocation and no lock of the worker's own.
pub(super) struct Slot {
    pub(super) id: u64,
    pub(super) delivery: Delivery,
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// Listed in `Inner::held`.
    pub(super) held: bool,
    /// Its handler succeeded: a success once acked.
    pub(super) handled: bool,
}

impl Slot {
    /// Frees the receive slot: the handler is done with this message.
    pub(super) fn finished(mut self) -> Self {
        self.permit = None;
        self
    }

    /// Frees the receive slot of a message its handler succeeded on.
    pub(super) fn succeeded(mut self) -> Self {
        self.handled = true;
        self.finished()
    }
}

impl Keyed for Slot {
    fn key(&self) -> Option<&str> {
        self.delivery.message.key.as_deref()
    }
}

/// Where the fetcher leaves messages for the handler loops.
pub(super) struct Dispatch {
    pub(super) queue: Mutex<Queue<Slot>>,
    /// Wakes an idle handler loop when a message becomes ready.
    pub(super) ready: Notify,
}

/// One of `concurrency` handler loops: takes the next ready message, runs
/// the policy on it, and again, until shutdown. Long-lived loops rather
/// than a task per message: under load a loop goes from one message to the
/// next without spawning or waking anything.
///
/// A loop wakes another only when the message it took keeps it busy: its
/// handler waits (for I/O, a timer...) or ran longer than `BUSY`. Handlers
/// that finish at once then run one after another in one loop rather than
/// waking (and moving between threads) up to `concurrency` loops for a
/// moment's work each; handlers that wait or work still run `concurrency`
/// at once.
pub(super) async fn handler_loop(
    inner: Arc<Inner>,
    dispatch: Arc<Dispatch>,
    stop: CancellationToken,
    acks: Arc<AckQueue<Slot>>,
) {
    use futures_util::FutureExt;
    // How long handlers that finish at once take, read off the clock every
    // `stride` handlers (doubling up to `MAX_STRIDE` while they are quick,
    // back to every one once they are not): a clock read per message showed
    // in profiles. `since` is the last read, `unmeasured` the handlers after it.
    let mut since: Option<std::time::Instant> = None;
    let (mut stride, mut unmeasured) = (1u32, 0u32);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let next = dispatch.queue.lock().unwrap().take();
        let slot = match next {
            Some(slot) => slot,
            None => {
                // Listening before looking again: a message queued after
                // the look wakes this loop. (Only when idle: registering
                // with the Notify takes its lock.)
                let woken = dispatch.ready.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let again = dispatch.queue.lock().unwrap().take();
                match again {
                    Some(slot) => slot,
                    None => {
                        // Idle: what was handled since the last look at the
                        // clock still tells the read-ahead the pace (one
                        // message at a time would never fill a stride).
                        if let Some(started) = since.take().filter(|_| unmeasured > 0) {
                            inner.read_ahead.handled(unmeasured, started.elapsed());
                            unmeasured = 0;
                        }
                        tokio::select! {
                            _ = woken => continue,
                            _ = stop.cancelled() => return,
                        }
                    }
                }
            }
        };
        let key = slot.delivery.message.key.clone();
        // Handler panics are caught inside; this guards the loop and the
        // key's order against a bug of ours.
        let work = std::panic::AssertUnwindSafe(process(&inner, slot, &acks)).catch_unwind();
        tokio::pin!(work);
        let started = *since.get_or_insert_with(|| {
            unmeasured = 0;
            std::time::Instant::now()
        });
        // Polled once here (it does all it can without waiting), then awaited if it waits.
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(work.as_mut(), cx))).await;
        let outcome = match first {
            std::task::Poll::Ready(outcome) => {
                unmeasured += 1;
                if unmeasured >= stride {
                    let now = std::time::Instant::now();
                    let took = now.duration_since(started);
                    inner.read_ahead.handled(unmeasured, took);
                    if took >= BUSY * unmeasured {
                        wake_another(&dispatch);
                        stride = 1;
                    } else {
                        stride = (stride * 2).min(MAX_STRIDE);
                    }
                    (since, unmeasured) = (Some(now), 0);
                }
                outcome
            }
            std::task::Poll::Pending => {
                wake_another(&dispatch);
                since = None;
                let outcome = work.await;
                if inner.read_ahead.adapts() {
                    inner.read_ahead.handled(unmeasured + 1, started.elapsed());
                }
                outcome
            }
        };
        if outcome.is_err() {
            tracing::error!("the worker's policy panicked (a bug); the message is handed back when the worker stops");
        }
        if let Some(key) = key {
            dispatch.queue.lock().unwrap().finished(&key);
        }
        // A loop whose handlers never wait must still let other tasks run
        // (when it yields, the next handler's time includes the time away:
        // at worst one needless look for another loop to wake).
        tokio::task::consume_budget().await;
    }
}

/// How long a handler may run without waiting before its loop hands the
/// next messages to another loop.
const BUSY: Duration = Duration::from_micros(50);

/// Most handlers between two looks at the clock while they finish at once.
const MAX_STRIDE: u32 = 8;

/// Wakes another handler loop if a message is ready for it.
fn wake_another(dispatch: &Dispatch) {
    if dispatch.queue.lock().unwrap().has_ready() {
        dispatch.ready.notify_one();
    }
}
