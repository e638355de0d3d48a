//! The worker runtime's own cost: a `Worker` over a broker that does
//! nothing (receive makes messages up, settling is free), so what is
//! measured is the policy around each message (slots, dispatch, handler
//! call, ack batching), the ceiling for every real backend.
//!
//! ```sh
//! cargo bench -p pillarbox --bench runtime
//! ```

// Only the consume side of the shared helpers is used here.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{env_number, rate, sdk_consume, PAYLOAD};
use pillarbox::{
    connect, Broker, Capabilities, DeadLetter, DeadLetterReason, Delivery, GroupStats, Message, Receipt,
    ReceiveRequest, Result, WorkerOptions,
};

/// A broker that hands out fresh 100-byte messages and forgets settlements.
#[derive(Debug)]
struct NullBroker {
    capabilities: Capabilities,
}

#[async_trait]
impl Broker for NullBroker {
    fn backend(&self) -> &'static str {
        "null"
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
    async fn ensure_group(&self, _: &str, _: &str) -> Result<()> {
        Ok(())
    }
    async fn publish(&self, _: &str, _: Vec<Message>) -> Result<()> {
        Ok(())
    }
    async fn publish_raw(&self, _: &str, _: Vec<(String, String)>, _: bytes::Bytes) -> Result<()> {
        Ok(())
    }
    async fn receive(&self, req: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        Ok((0..req.max)
            .map(|_| Delivery::new(req.topic, req.group, Message::new(&PAYLOAD[..]), None, Receipt::new(())))
            .collect())
    }
    async fn ack(&self, _: &[Delivery]) -> Result<()> {
        Ok(())
    }
    async fn extend_leases(&self, _: &[Delivery], _: Duration) -> Result<()> {
        Ok(())
    }
    async fn retry(&self, _: &Delivery, _: Message) -> Result<()> {
        Ok(())
    }
    async fn dead_letter(&self, _: &Delivery, _: &DeadLetterReason) -> Result<()> {
        Ok(())
    }
    async fn inspect(&self, _: &str, _: &str) -> Result<GroupStats> {
        Ok(GroupStats::default())
    }
    async fn groups(&self, _: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn list_dead_letters(&self, _: &str, _: &str, _: Option<&str>, _: usize) -> Result<Vec<DeadLetter>> {
        Ok(Vec::new())
    }
    async fn redrive_dead_letters(&self, _: &str, _: &str, _: &[String]) -> Result<usize> {
        Ok(0)
    }
    async fn purge_dead_letters(&self, _: &str, _: &str, _: Option<&[String]>) -> Result<usize> {
        Ok(0)
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_number("PB_BENCH_N", 200_000);
    let rounds = env_number("PB_BENCH_ROUNDS", 3);
    // With leases to renew (memory, SQLite, Redis) and without (RabbitMQ
    // and Kafka hold deliveries by connection or partition assignment).
    for leases in [true, false] {
        let mut capabilities = connect("memory://").await.unwrap().capabilities();
        capabilities.leases = leases;
        let broker: Arc<dyn Broker> = Arc::new(NullBroker { capabilities });
        let held_by = if leases { "leases" } else { "no leases" };
        for concurrency in [1, 16] {
            let mut best = 0f64;
            for _ in 0..rounds {
                let options = WorkerOptions::default().concurrency(concurrency).prefetch(200 - concurrency);
                best = best.max(rate(n, sdk_consume(&broker, "bench", n, options).await));
            }
            println!(
                "worker runtime, no broker, {held_by:>9}, concurrency {concurrency:>2}: {best:>9.0} msg/s (best of {rounds})"
            );
        }
    }
}
