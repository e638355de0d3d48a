//! What the worker holds: leases and idempotency claims kept fresh from
//! Rust while handlers run, and handed back when the worker stops.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::dispatch::Slot;
use super::stats::bump;
use super::Inner;
use crate::broker::Delivery;

/// A message whose lease (where the broker leases) or idempotency claim
/// the lease keeper keeps fresh while the worker holds it.
pub(super) struct Held {
    pub(super) delivery: Delivery,
    pub(super) claim: Option<String>,
}

/// Hands back what no handler will settle: deliveries dropped unsettled
/// (their handler stopped at the end of the shutdown grace), and, after a
/// run was dropped half-way, what it left listed for the lease keeper (the
/// slots went with the run).
pub(super) async fn hand_back_leftovers(inner: &Inner) {
    let mut leftovers = std::mem::take(&mut *inner.abandoned.lock().unwrap());
    leftovers.extend(inner.held.lock().unwrap().drain().map(|(_, held)| (held.delivery, held.claim)));
    if leftovers.is_empty() {
        return;
    }
    for (delivery, claim) in &leftovers {
        if let Some(key) = claim {
            let owner = claim_owner(inner, delivery);
            let _ = inner.store.release(&inner.scope, key, &owner).await;
        }
    }
    let deliveries: Vec<Delivery> = leftovers.into_iter().map(|(delivery, _)| delivery).collect();
    match inner.broker.release(&deliveries).await {
        Ok(()) => bump(&inner.counters.released, deliveries.len() as u64),
        Err(e) => tracing::warn!(error = %e, "could not hand messages back; they return when their lease expires"),
    }
}

/// Renews every held lease and claim each third of the lease.
pub(super) async fn lease_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let lease = inner.options.lease;
    let every = lease / 3;
    let renew_leases = inner.broker.capabilities().leases;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let (deliveries, claims): (Vec<Delivery>, Vec<(String, String)>) = {
            let held = inner.held.lock().unwrap();
            let deliveries = held.values().map(|h| Delivery::clone(&h.delivery)).collect();
            let claims =
                held.values().filter_map(|h| h.claim.clone().map(|k| (k, claim_owner(&inner, &h.delivery)))).collect();
            (deliveries, claims)
        };
        if renew_leases && !deliveries.is_empty() {
            if let Err(e) = inner.broker.extend_leases(&deliveries, lease).await {
                tracing::warn!(error = %e, "could not renew leases");
            }
        }
        for (key, owner) in claims {
            if let Err(e) = inner.store.renew(&inner.scope, &key, &owner, lease).await {
                tracing::warn!(error = %e, "could not renew an idempotency claim");
            }
        }
    }
}

pub(super) async fn release_slots(inner: &Inner, slots: Vec<Slot>) {
    if slots.is_empty() {
        return;
    }
    let ids: Vec<u64> = slots.iter().filter(|s| s.held).map(|s| s.id).collect();
    let deliveries: Vec<Delivery> = slots.into_iter().map(|s| s.delivery).collect();
    match inner.broker.release(&deliveries).await {
        Ok(()) => bump(&inner.counters.released, deliveries.len() as u64),
        Err(e) => tracing::warn!(error = %e, "could not hand messages back; they return when their lease expires"),
    }
    let mut held = inner.held.lock().unwrap();
    for id in ids {
        held.remove(&id);
    }
}

pub(super) fn claim_owner(inner: &Inner, d: &Delivery) -> String {
    format!("{}/{}", inner.consumer, d.message.id)
}
