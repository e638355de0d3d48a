//! The README's Rust snippet, as a program that builds: `cargo test`
//! compiles it, and `core/tests/readme.rs` checks the README shows exactly
//! the lines between the markers (and this file's `use` line).

use pillarbox::{connect, HandlerError, Job, Message, RetryPolicy, Worker, WorkerOptions};

/// What the snippet's handler calls: sending an email, say.
async fn send(_payload: &[u8]) -> std::io::Result<()> {
    Ok(())
}

// Laid out as the README shows it, comments aligned.
#[rustfmt::skip]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // README begin
    let broker = connect("sqlite://queue.db").await?;          // or memory://, redis://host, amqp://host, kafka://host:9092
    broker.ensure_group("emails", "sender").await?;             // a subscription: receives everything from now on

    // Producer: payload bytes plus metadata.
    broker.publish("emails", vec![
        Message::json(&serde_json::json!({"to": "ada@example.com"}))?
            .with_key("user-1")                                  // ordering / routing key
            .with_idempotency_key("welcome-1")                   // handler effect runs once per key
            .with_delay(std::time::Duration::from_secs(10)),     // not delivered before then
    ]).await?;

    // Consumer: the worker runs the handler and applies all the policy.
    let worker = Worker::new(broker, "emails", "sender", |job: Job| async move {
        println!("attempt {} of {}", job.attempt(), job.max_attempts);
        send(&job.message.payload).await.map_err(|e| HandlerError::retryable(e.to_string()))
    }, WorkerOptions::default().concurrency(4).retry(RetryPolicy::retries(5)))?;
    worker.run().await?;   // until worker.shutdown() or its shutdown_token() is cancelled
    // README end
    Ok(())
}
