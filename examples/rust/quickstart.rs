//! Quickstart on the embedded default: no server needed.
//!
//! ```sh
//! cargo run -p pillarbox --example quickstart
//! ```
//!
//! A producer publishes "send a welcome email" tasks; a worker handles them
//! with a handler that sometimes fails. You will see a retry with backoff,
//! one message dead-lettered with its reason, an idempotent duplicate
//! skipped, a delayed message, and the inspection figures.
//! Set `PILLARBOX_URL` to run the same program against another backend.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pillarbox::{connect, HandlerError, Job, Message, RetryPolicy, Worker, WorkerOptions};
use serde_json::json;

const TOPIC: &str = "emails";
const GROUP: &str = "welcome-sender";

#[tokio::main]
async fn main() -> pillarbox::Result<()> {
    let url = std::env::var("PILLARBOX_URL").unwrap_or_else(|_| {
        let path = std::env::temp_dir().join("pillarbox-quickstart.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        format!("sqlite://{}", path.display())
    });
    println!("broker: {}\n", pillarbox::url::redact(&url));
    let broker = connect(&url).await?;
    // Declare the group first, so it receives everything published from now on.
    broker.ensure_group(TOPIC, GROUP).await?;

    // --- the producer -------------------------------------------------------
    let mut tasks = Vec::new();
    for (user, email) in [
        (1, "ada@example.com"),
        (2, "grace@example.com"),
        (3, "flaky@example.com"),
        (4, "not-an-address"),
        (5, "linus@example.com"),
    ] {
        tasks.push(
            Message::json(&json!({ "user": user, "email": email }))?
                .with_key(format!("user-{user}"))
                .with_idempotency_key(format!("welcome-{user}")),
        );
    }
    // The same task again (a double click, a re-sent request): same idempotency key.
    tasks.push(Message::json(&json!({ "user": 2, "email": "grace@example.com" }))?.with_idempotency_key("welcome-2"));
    // A reminder that must not go out before one second from now.
    tasks.push(
        Message::json(&json!({ "user": 1, "email": "ada@example.com", "reminder": true }))?
            .with_idempotency_key("reminder-1")
            .with_delay(Duration::from_secs(1)),
    );
    broker.publish(TOPIC, tasks).await?;
    println!("published 7 messages (one duplicate, one delayed by 1 s)\n");

    // --- the worker ---------------------------------------------------------
    let started = Instant::now();
    let flaky_failures = Arc::new(AtomicU32::new(0));
    let failures = Arc::clone(&flaky_failures);
    let handler = move |job: Job| {
        let failures = Arc::clone(&failures);
        async move {
            let task: serde_json::Value = job.message.payload_json().map_err(|e| HandlerError::fatal(e.to_string()))?;
            let email = task["email"].as_str().unwrap_or_default().to_string();
            let t = started.elapsed().as_secs_f64();
            if !email.contains('@') {
                println!("[{t:5.2}s] attempt {} for {email:<18} -> invalid address: not retryable", job.attempt());
                return Err(
                    HandlerError::fatal(format!("`{email}` is not an email address")).with_kind("InvalidAddress")
                );
            }
            if email.starts_with("flaky") && failures.fetch_add(1, Ordering::SeqCst) < 2 {
                println!("[{t:5.2}s] attempt {} for {email:<18} -> SMTP timeout, will retry", job.attempt());
                return Err(HandlerError::retryable("SMTP server timed out").with_kind("SmtpTimeout"));
            }
            let what = if task["reminder"].as_bool() == Some(true) { "reminder" } else { "welcome" };
            println!("[{t:5.2}s] attempt {} for {email:<18} -> {what} email sent", job.attempt());
            Ok(())
        }
    };
    let options = WorkerOptions::default()
        .concurrency(2)
        .poll_wait(Duration::from_millis(200))
        .retry(RetryPolicy::retries(3).with_backoff(Duration::from_millis(300), 2.0, Duration::from_secs(5)));
    let worker = Worker::new(Arc::clone(&broker), TOPIC, GROUP, handler, options)?;
    let running = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.run().await })
    };

    // Wait until everything is settled, then stop gracefully.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = broker.inspect(TOPIC, GROUP).await?;
        if s.ready == 0 && s.in_flight == Some(0) && s.waiting == 0 && worker.stats().received >= 7 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("gave up waiting: {s:?}");
            std::process::exit(1);
        }
    }
    worker.shutdown();
    running.await.expect("worker task")?;

    // --- what happened --------------------------------------------------------
    let stats = worker.stats();
    println!(
        "\nworker: {} received, {} succeeded, {} retried, {} dead-lettered, {} duplicate skipped",
        stats.received, stats.succeeded, stats.retried, stats.dead_lettered, stats.duplicates
    );
    let s = broker.inspect(TOPIC, GROUP).await?;
    println!(
        "broker: ready {}, in flight {}, waiting {}, dead letters {}",
        s.ready,
        s.in_flight.map_or("unknown".to_string(), |n| n.to_string()),
        s.waiting,
        s.dead_letters
    );
    for dead in broker.list_dead_letters(TOPIC, GROUP, None, 10).await? {
        let r = &dead.reason;
        println!(
            "dead letter {}: {} after {} attempt(s): {}: {} (from {}/{})",
            dead.message.id, r.cause, r.attempts, r.error_kind, r.error_message, r.topic, r.group
        );
    }
    broker.close().await
}
