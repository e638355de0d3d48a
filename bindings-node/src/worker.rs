//! The native `Worker`: the core's worker over a JavaScript handler.

use std::sync::Arc;

use napi::bindgen_prelude::Result;
use napi_derive::napi;
use pillarbox::{RetryPolicy, WorkerOptions as CoreOptions};

use crate::broker::Broker;
use crate::errors::OrThrow;
use crate::handler::Dispatcher;
use crate::message::millis;

/// A worker's options; durations in milliseconds. Every one has the core's default.
#[napi(object)]
#[derive(Default)]
pub struct WorkerOptions {
    pub concurrency: Option<u32>,
    pub prefetch: Option<u32>,
    pub max_retries: Option<u32>,
    pub initial_delay_ms: Option<f64>,
    pub multiplier: Option<f64>,
    pub max_delay_ms: Option<f64>,
    pub jitter: Option<f64>,
    pub handler_timeout_ms: Option<f64>,
    pub lease_ms: Option<f64>,
    pub poll_wait_ms: Option<f64>,
    pub shutdown_grace_ms: Option<f64>,
    pub idempotency_retention_ms: Option<f64>,
    pub busy_key_delay_ms: Option<f64>,
    pub consumer_name: Option<String>,
    /// URL of a shared idempotency store (`redis://`, `sqlite://PATH`,
    /// `memory://`), opened when the worker is made.
    pub idempotency_store: Option<String>,
}

impl WorkerOptions {
    fn to_core(&self) -> Result<CoreOptions> {
        let defaults = RetryPolicy::default();
        let duration = |ms: Option<f64>, name: &str| ms.map(|ms| millis(ms, name)).transpose();
        let retry = RetryPolicy::retries(self.max_retries.unwrap_or(defaults.max_retries))
            .with_backoff(
                duration(self.initial_delay_ms, "initialDelayMs")?.unwrap_or(defaults.initial_delay),
                self.multiplier.unwrap_or(defaults.multiplier),
                duration(self.max_delay_ms, "maxDelayMs")?.unwrap_or(defaults.max_delay),
            )
            .with_jitter(self.jitter.unwrap_or(defaults.jitter));
        let mut options = CoreOptions::default().retry(retry);
        if let Some(n) = self.concurrency {
            options = options.concurrency(n as usize);
        }
        if let Some(n) = self.prefetch {
            options = options.prefetch(n as usize);
        }
        if let Some(d) = duration(self.handler_timeout_ms, "handlerTimeoutMs")? {
            options = options.handler_timeout(d);
        }
        if let Some(d) = duration(self.lease_ms, "leaseMs")? {
            options = options.lease(d);
        }
        if let Some(d) = duration(self.poll_wait_ms, "pollWaitMs")? {
            options = options.poll_wait(d);
        }
        if let Some(d) = duration(self.shutdown_grace_ms, "shutdownGraceMs")? {
            options = options.shutdown_grace(d);
        }
        if let Some(d) = duration(self.idempotency_retention_ms, "idempotencyRetentionMs")? {
            options = options.idempotency_retention(d);
        }
        if let Some(d) = duration(self.busy_key_delay_ms, "busyKeyDelayMs")? {
            options = options.busy_key_delay(d);
        }
        if let Some(name) = &self.consumer_name {
            options = options.consumer_name(name.clone());
        }
        if let Some(url) = &self.idempotency_store {
            // Opened here, as Python's worker does, so that a bad URL or an
            // unreachable store fails the constructor, not the first message.
            let store = napi::bindgen_prelude::block_on(pillarbox::idempotency::open(url)).or_throw()?;
            options = options.idempotency_store(store);
        }
        Ok(options)
    }
}

/// What a worker has done since it was created.
#[napi(object)]
pub struct WorkerStats {
    pub received: i64,
    pub succeeded: i64,
    pub retried: i64,
    pub dead_lettered: i64,
    pub duplicates: i64,
    pub deferred: i64,
    pub released: i64,
    pub settle_errors: i64,
    /// Taken back by the broker while their handler ran (an expired lease,
    /// RabbitMQ's consumer timeout): not recorded, delivered again.
    pub lost: i64,
}

#[napi]
pub struct Worker {
    worker: pillarbox::Worker,
}

#[napi]
impl Worker {
    #[napi(constructor)]
    pub fn new(
        broker: &Broker,
        topic: String,
        group: String,
        dispatcher: &Dispatcher,
        options: Option<WorkerOptions>,
    ) -> Result<Self> {
        let options = options.unwrap_or_default().to_core()?;
        let handler = dispatcher.handler(None);
        let worker = pillarbox::Worker::new(Arc::clone(&broker.inner), &topic, &group, handler, options).or_throw()?;
        Ok(Worker { worker })
    }

    #[napi(getter)]
    pub fn consumer_name(&self) -> String {
        self.worker.consumer_name().to_string()
    }

    /// Runs until `shutdown()`, then shuts down gracefully.
    #[napi]
    pub async fn run(&self) -> Result<()> {
        self.worker.run().await.or_throw()
    }

    #[napi]
    pub fn shutdown(&self) {
        self.worker.shutdown();
    }

    #[napi]
    pub fn stats(&self) -> WorkerStats {
        let s = self.worker.stats();
        WorkerStats {
            received: s.received as i64,
            succeeded: s.succeeded as i64,
            retried: s.retried as i64,
            dead_lettered: s.dead_lettered as i64,
            duplicates: s.duplicates as i64,
            deferred: s.deferred as i64,
            released: s.released as i64,
            settle_errors: s.settle_errors as i64,
            lost: s.lost as i64,
        }
    }
}
