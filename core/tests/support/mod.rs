//! What the backend tests share: receiving directly, publishing through an
//! outage, and waiting until every acknowledged message has been handled.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pillarbox::{Broker, Delivery, HandlerError, Job, Message, ReceiveRequest};

/// Bodies of the messages a handler has seen.
pub type Seen = Arc<Mutex<HashSet<String>>>;

/// A handler that records each body, taking 5 ms so that a backlog builds up.
pub fn recording_handler(seen: &Seen) -> impl pillarbox::Handler {
    let seen = Arc::clone(seen);
    move |job: Job| {
        let seen = Arc::clone(&seen);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            seen.lock().unwrap().insert(String::from_utf8_lossy(&job.message.payload).into_owned());
            Ok::<(), HandlerError>(())
        }
    }
}

/// Publishes `body`, trying again until the broker takes it (up to `patience`).
/// Returns how many calls failed first.
pub async fn publish_until_taken(broker: &dyn Broker, topic: &str, body: &str, patience: Duration) -> usize {
    let deadline = Instant::now() + patience;
    let mut failed = 0;
    loop {
        match broker.publish(topic, vec![Message::new(body.to_string())]).await {
            Ok(()) => return failed,
            Err(e) => {
                failed += 1;
                assert!(Instant::now() < deadline, "publish never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until every body in `taken` has been seen, failing after `patience`.
pub async fn wait_all_seen(seen: &Seen, taken: &[String], patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let missing: Vec<String> = {
            let seen = seen.lock().unwrap();
            taken.iter().filter(|b| !seen.contains(*b)).cloned().collect()
        };
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged messages never handled, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Receives up to `max` messages of `topic` for group `g` as `consumer`
/// (30 s lease), waiting up to `wait` for the first.
pub async fn receive(broker: &dyn Broker, topic: &str, consumer: &str, max: usize, wait: Duration) -> Vec<Delivery> {
    let request =
        ReceiveRequest { topic, group: "g", consumer, max, window: max, wait, lease: Duration::from_secs(30) };
    broker.receive(request).await.unwrap()
}

/// Receives as `consumer` until `n` messages of `topic` are in or `within`
/// runs out (a receive returns what has arrived, not necessarily `n`).
pub async fn receive_n(broker: &dyn Broker, topic: &str, consumer: &str, n: usize, within: Duration) -> Vec<Delivery> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    while got.len() < n && Instant::now() < deadline {
        got.extend(receive(broker, topic, consumer, n - got.len(), Duration::from_secs(1)).await);
    }
    got
}
