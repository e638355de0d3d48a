//! The fetcher: receives while the worker has room, and queues what it
//! receives for the handler loops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatch, Slot};
use super::leases::Held;
use super::stats::bump;
use super::Inner;
use crate::broker::{Delivery, ReceiveRequest};
use crate::error::{Error, Result};

/// How long the fetcher waits for free slots to gather into one receive.
const GATHER: Duration = Duration::from_millis(2);

/// Receives while there is room, until shutdown. A broker error is logged
/// and retried with backoff; a closed broker ends the worker.
pub(super) async fn fetch_loop(
    inner: Arc<Inner>,
    slots: Arc<Semaphore>,
    dispatch: Arc<Dispatch>,
    stop: CancellationToken,
) -> Result<()> {
    let capacity = inner.capacity;
    let pushes_ahead = inner.broker.capabilities().pushes_ahead;
    let mut backoff = Duration::from_millis(100);
    // Kept from receive to receive (growing it permit by permit reallocated
    // several times a receive).
    let mut permits = Vec::with_capacity(capacity);
    // Slots the read-ahead leaves unused for now, kept out of circulation.
    let mut reserve: Vec<OwnedSemaphorePermit> = Vec::new();
    // The last receive got less than it asked for: nothing is waiting.
    let mut drained = true;
    let adapts = inner.read_ahead.adapts();
    let concurrency = inner.options.concurrency;
    let mut last_window = concurrency;
    loop {
        // What a failed receive took goes back before waiting for a slot
        // (else a receive error with every slot taken waited forever).
        permits.clear();
        // Stopping first: a fetcher stopped before it began must not receive.
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("semaphore never closed"),
        };
        // The most to hold now: the handlers and the read-ahead (see
        // `read_ahead`). Read ahead only from a backlog: after a receive
        // that emptied it, the next (which may wait for new messages) takes
        // only what the handlers start at once, else the first burst after
        // a quiet spell would all go to one worker. From there it may
        // double with each receive that finds more waiting (as TCP's slow
        // start): when the new messages are slower than the pace measured
        // so far, few wait behind them here. A broker that pushes ahead
        // keeps the window its consumer started with (RabbitMQ: see the
        // amqp backend), so there the default is the handlers alone.
        let paced = concurrency + inner.read_ahead.now();
        let window = match (adapts, pushes_ahead, drained) {
            (false, _, _) => paced,
            (true, true, _) | (true, false, true) => concurrency,
            (true, false, false) => paced.min(last_window * 2),
        };
        last_window = window;
        let spare = capacity - window;
        if reserve.len() < spare {
            // Less to hold than before: keep slots back as they come free.
            reserve.push(first);
            while reserve.len() < spare {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => reserve.push(p),
                    Err(_) => break,
                }
            }
            continue;
        }
        // More to hold: slots kept back go out again.
        reserve.truncate(spare);
        permits.push(first);
        while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
            permits.push(p);
        }
        // Slots come back one by one as handlers finish; wait a moment for
        // half of them, so one receive fetches a batch rather than a message.
        // Where the broker pushes ahead its messages are here already and a
        // receive costs no round trip, but still a call's work: wait only
        // while the handlers have more than a round queued, for as many
        // slots as that surplus (which lasts that long). Handlers that wait
        // on another runtime (JavaScript, Python) free their slots a few at
        // a time: a Node worker on Kafka received 1.6 messages a call.
        let gather = if pushes_ahead {
            let ready = dispatch.queue.lock().unwrap().ready();
            ready.saturating_sub(concurrency).min(window.div_ceil(2))
        } else {
            window.div_ceil(2)
        };
        let gather_until = tokio::time::Instant::now() + GATHER;
        while permits.len() < gather {
            match tokio::time::timeout_at(gather_until, Arc::clone(&slots).acquire_owned()).await {
                Ok(p) => permits.push(p.expect("semaphore never closed")),
                Err(_) => break,
            }
        }
        let request = ReceiveRequest {
            topic: &inner.topic,
            group: &inner.group,
            consumer: &inner.consumer,
            max: permits.len(),
            window,
            wait: inner.options.poll_wait,
            lease: inner.options.lease,
        };
        // Never dropped half-way: a receive that took messages must hand them on.
        match inner.broker.receive(request).await {
            Ok(deliveries) => {
                backoff = Duration::from_millis(100);
                drained = deliveries.len() < permits.len();
                let mut deliveries = deliveries;
                if deliveries.len() > permits.len() {
                    // A backend bug, not the caller's: hand the surplus back rather than hold it unleased.
                    let surplus = deliveries.split_off(permits.len());
                    tracing::warn!(
                        count = surplus.len(),
                        "the broker returned more messages than asked for; handing them back"
                    );
                    if let Err(e) = inner.broker.release(&surplus).await {
                        tracing::warn!(error = %e, "could not hand back the surplus; it returns after its lease");
                    }
                }
                bump(&inner.counters.received, deliveries.len() as u64);
                inner.read_ahead.received(&deliveries);
                let received: Vec<Slot> = deliveries
                    .into_iter()
                    .zip(permits.drain(..))
                    .map(|(delivery, permit)| Slot {
                        id: inner.next_id.fetch_add(1, Ordering::Relaxed),
                        delivery,
                        permit: Some(permit),
                        held: inner.leases,
                        handled: false,
                    })
                    .collect();
                if inner.leases {
                    let mut held = inner.held.lock().unwrap();
                    for slot in &received {
                        held.insert(slot.id, Held { delivery: Delivery::clone(&slot.delivery), claim: None });
                    }
                }
                let ready = {
                    let mut queue = dispatch.queue.lock().unwrap();
                    received.into_iter().filter_map(|slot| queue.push(slot).then_some(())).count()
                };
                // One loop; it wakes others if its handlers keep it busy.
                if ready > 0 {
                    dispatch.ready.notify_one();
                }
            }
            Err(Error::Closed) => return Err(Error::Closed),
            Err(e) => {
                tracing::warn!(error = %e, topic = %inner.topic, group = %inner.group, "receive failed; trying again in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if stop.is_cancelled() {
            return Ok(());
        }
    }
}
