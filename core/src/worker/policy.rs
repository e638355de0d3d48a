//! The policy for one delivery, the same on every backend: malformed and
//! over-delivered messages, idempotency, the handler, then success, retry
//! with backoff or dead letter.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::acks::AckQueue;
use super::dispatch::Slot;
use super::handler::{HandlerError, Job};
use super::leases::{claim_owner, Held};
use super::stats::bump;
use super::Inner;
use crate::broker::Delivery;
use crate::dead_letter::{cause, DeadLetterReason};
use crate::error::Error;
use crate::idempotency::Claim;
use crate::message::{now_millis, FailureHistory, Message};

/// A delivery the policy has not settled yet. Dropped unsettled (its
/// handler loop stopped at the end of the shutdown grace, or a bug of ours
/// panicked), it is left for the worker to hand back as it stops.
struct Unsettled<'a> {
    inner: &'a Inner,
    slot: Option<Slot>,
    claim: Option<String>,
}

impl Unsettled<'_> {
    fn slot(&self) -> &Slot {
        self.slot.as_ref().expect("a delivery is settled once, at the end")
    }

    /// The slot, settled: an ack queued, or a retry or dead letter done
    /// (or refused by the broker, which then delivers the message again).
    fn settled(mut self) -> Slot {
        self.slot.take().expect("a delivery is settled once, at the end")
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            forget(self.inner, &slot);
            self.inner.abandoned.lock().unwrap_or_else(|e| e.into_inner()).push((slot.delivery, self.claim.take()));
        }
    }
}

/// The policy for one delivery.
pub(super) async fn process(inner: &Arc<Inner>, slot: Slot, acks: &AckQueue<Slot>) {
    let mut unsettled = Unsettled { inner, slot: Some(slot), claim: None };
    let max_attempts = inner.options.retry.max_attempts();
    let delivery = &unsettled.slot().delivery;
    let message = Arc::clone(&delivery.message);

    if let Some(why) = &delivery.malformed {
        let reason = reason(inner, &message, cause::MALFORMED, "malformed", why);
        return settle_dead(inner, unsettled, reason).await;
    }
    if message.attempt > max_attempts {
        let (kind, last) = match &message.failures {
            Some(f) => (f.last_error_kind.clone(), f.last_error.clone()),
            None => ("redelivered".to_string(), String::new()),
        };
        let why = format!(
            "delivered {} times, more than the {} attempts allowed, without being settled (its consumers died or lost the lease){}{}",
            message.attempt,
            max_attempts,
            if last.is_empty() { "" } else { "; last error: " },
            last
        );
        let reason = reason(inner, &message, cause::REDELIVERY_LIMIT, &kind, &why);
        return settle_dead(inner, unsettled, reason).await;
    }

    // The idempotency check.
    if let Some(key) = &message.idempotency_key {
        let owner = claim_owner(inner, &unsettled.slot().delivery);
        match inner.store.claim(&inner.scope, key, &owner, inner.options.lease).await {
            Ok(Claim::AlreadyDone) => {
                bump(&inner.counters.duplicates, 1);
                tracing::debug!(id = %message.id, key = %key, "duplicate of a done idempotency key; acked without running");
                acks.push(unsettled.settled().finished()).await;
                return;
            }
            Ok(Claim::Busy) => {
                bump(&inner.counters.deferred, 1);
                return settle_later(inner, unsettled, inner.options.busy_key_delay).await;
            }
            Ok(Claim::Acquired) => {
                // The lease keeper renews the claim from now on.
                let slot = unsettled.slot.as_mut().expect("not settled yet");
                let mut held = inner.held.lock().unwrap();
                let entry = held
                    .entry(slot.id)
                    .or_insert_with(|| Held { delivery: Delivery::clone(&slot.delivery), claim: None });
                entry.claim = Some(key.clone());
                slot.held = true;
                unsettled.claim = Some(key.clone());
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency store unavailable; the message will be tried again later");
                return settle_later(inner, unsettled, inner.options.busy_key_delay).await;
            }
        }
    }

    let delivery = &unsettled.slot().delivery;
    let (topic, group) = (Arc::clone(&delivery.topic), Arc::clone(&delivery.group));
    let job = Job::new(Arc::clone(&message), topic, group, max_attempts);
    let outcome = run_handler(inner, job).await;

    match outcome {
        Ok(()) => {
            if let Some(key) = &unsettled.claim {
                let owner = claim_owner(inner, &unsettled.slot().delivery);
                if let Err(e) = inner.store.complete(&inner.scope, key, &owner, inner.retention).await {
                    tracing::warn!(error = %e, "could not mark the idempotency key done; a duplicate may run again");
                }
            }
            // Counted as a success once acked (the broker may have taken it back).
            acks.push(unsettled.settled().succeeded()).await;
        }
        Err(error) => {
            if let Some(key) = &unsettled.claim {
                let owner = claim_owner(inner, &unsettled.slot().delivery);
                if let Err(e) = inner.store.release(&inner.scope, key, &owner).await {
                    tracing::warn!(error = %e, "could not release the idempotency claim; it expires with its lease");
                }
            }
            tracing::info!(id = %message.id, attempt = message.attempt, error = %error, "handler failed");
            if error.retryable && message.attempt < max_attempts {
                let delay = error.retry_after.unwrap_or_else(|| inner.options.retry.delay(message.attempt));
                let mut next = Message::clone(&message);
                next.attempt = message.attempt + 1;
                next.failures = Some(record_failure(message.failures.as_ref(), &error));
                next.deliver_at = Some(now_millis() + delay);
                match inner.broker.retry(&unsettled.slot().delivery, next).await {
                    Ok(()) => bump(&inner.counters.retried, 1),
                    Err(e) => settle_error(inner, &e),
                }
                forget(inner, &unsettled.settled());
            } else {
                let why = if error.retryable { cause::RETRIES_EXHAUSTED } else { cause::NOT_RETRYABLE };
                let reason = reason(inner, &message, why, &error.kind, &error.message);
                settle_dead(inner, unsettled, reason).await;
            }
        }
    }
}

/// Runs the handler so that a panic or a timeout is a failure of this
/// message, never of the worker. The job's cancellation fires when the
/// timeout passes or this attempt is abandoned (its future dropped: the
/// shutdown grace ended, or the run was dropped), for handlers that run
/// outside this future.
async fn run_handler(inner: &Arc<Inner>, mut job: Job) -> std::result::Result<(), HandlerError> {
    use futures_util::FutureExt;
    let abandoned = job.cancellation_token().clone().drop_guard();
    let limit = inner.options.handler_timeout;
    job.deadline = limit.map(|limit| SystemTime::now() + limit);
    // The handler is only ever polled here; a panic leaves nothing of ours half-updated.
    let guarded = std::panic::AssertUnwindSafe(inner.handler.handle(job)).catch_unwind();
    let outcome = match limit {
        None => guarded.await,
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // Dropping the future stops a Rust handler at its next
                // await; dropping the guard tells any other kind.
                drop(abandoned);
                return Err(
                    HandlerError::retryable(format!("handler did not finish within {limit:?}")).with_kind("timeout")
                );
            }
        },
    };
    abandoned.disarm();
    outcome.unwrap_or_else(|payload| {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        Err(HandlerError::retryable(text).with_kind("panic"))
    })
}

fn record_failure(previous: Option<&FailureHistory>, error: &HandlerError) -> FailureHistory {
    let now = now_millis();
    FailureHistory {
        first_failed_at: previous.map(|p| p.first_failed_at).unwrap_or(now),
        last_failed_at: now,
        last_error_kind: error.kind.clone(),
        last_error: error.message.clone(),
    }
}

fn reason(inner: &Inner, message: &Message, why: &str, kind: &str, error_message: &str) -> DeadLetterReason {
    let now = SystemTime::now();
    DeadLetterReason {
        topic: inner.topic.clone(),
        group: inner.group.clone(),
        attempts: message.attempt,
        cause: why.to_string(),
        error_kind: kind.to_string(),
        error_message: error_message.to_string(),
        first_failed_at: message.failures.as_ref().map(|f| f.first_failed_at).unwrap_or(now),
        last_failed_at: now,
    }
}

async fn settle_dead(inner: &Arc<Inner>, unsettled: Unsettled<'_>, reason: DeadLetterReason) {
    let delivery = &unsettled.slot().delivery;
    tracing::warn!(id = %delivery.message.id, cause = %reason.cause, error = %reason.error_message, "dead-lettered");
    match inner.broker.dead_letter(delivery, &reason).await {
        Ok(()) => bump(&inner.counters.dead_lettered, 1),
        Err(e) => settle_error(inner, &e),
    }
    forget(inner, &unsettled.settled());
}

/// Puts the message back for later without counting an attempt.
async fn settle_later(inner: &Arc<Inner>, unsettled: Unsettled<'_>, delay: Duration) {
    let delivery = &unsettled.slot().delivery;
    let mut again = Message::clone(&delivery.message);
    again.deliver_at = Some(now_millis() + delay);
    if let Err(e) = inner.broker.retry(delivery, again).await {
        settle_error(inner, &e);
    }
    forget(inner, &unsettled.settled());
}

fn settle_error(inner: &Inner, e: &Error) {
    match e {
        Error::LeaseLost { count, .. } => lost(inner, *count, e),
        _ => {
            bump(&inner.counters.settle_errors, 1);
            tracing::warn!(error = %e, "could not settle a message; it will be delivered again");
        }
    }
}

/// `count` messages the broker took back while their handlers ran.
pub(super) fn lost(inner: &Inner, count: usize, e: &Error) {
    bump(&inner.counters.lost, count as u64);
    tracing::warn!(
        error = %e,
        topic = %inner.topic,
        group = %inner.group,
        "the broker took back messages while their handlers ran (a lease expired, or RabbitMQ closed the channel past its consumer_timeout); what the handlers did is not recorded, and the messages will be delivered again (skipped then if their idempotency key is done)"
    );
}

/// Takes a settled delivery off the lease keeper's list.
pub(super) fn forget(inner: &Inner, slot: &Slot) {
    if slot.held {
        inner.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&slot.id);
    }
}
