//! What the backend tests share: receiving directly, publishing through an
//! outage, and waiting until every acknowledged message has been handled.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashSet;
use std::path::Path;
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

/// How often a handler saw each body, and when it last saw any.
#[derive(Clone, Default)]
pub struct Counted {
    pub counts: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    pub times: Arc<Mutex<Vec<Instant>>>,
}

impl Counted {
    /// A handler that counts each body, taking 5 ms so that a backlog builds up.
    pub fn handler(&self) -> impl pillarbox::Handler {
        let this = self.clone();
        move |job: Job| {
            let this = this.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let body = String::from_utf8_lossy(&job.message.payload).into_owned();
                *this.counts.lock().unwrap().entry(body).or_default() += 1;
                this.times.lock().unwrap().push(Instant::now());
                Ok::<(), HandlerError>(())
            }
        }
    }

    pub fn handled(&self) -> usize {
        self.counts.lock().unwrap().len()
    }

    /// Handlings beyond the first of each body.
    pub fn duplicates(&self) -> usize {
        self.counts.lock().unwrap().values().map(|n| n - 1).sum()
    }

    /// The first handling at or after `at`.
    pub fn first_after(&self, at: Instant) -> Option<Instant> {
        self.times.lock().unwrap().iter().copied().filter(|t| *t >= at).min()
    }

    /// Waits until every body of `taken` has been handled; returns the ones
    /// that never were within `patience`.
    pub async fn missing_after(&self, taken: &[String], patience: Duration) -> Vec<String> {
        let deadline = Instant::now() + patience;
        loop {
            let missing: Vec<String> = {
                let counts = self.counts.lock().unwrap();
                taken.iter().filter(|b| !counts.contains_key(*b)).cloned().collect()
            };
            if missing.is_empty() || Instant::now() > deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Appends a fault test's figures to the report tests/run.sh prints after
/// the Rust tests (a passing test's own output is hidden), and prints them.
pub fn report(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-report.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// Publishes `n` messages to `topic`, one confirmed publish at a time, while
/// a worker consumes them; a third of the way through, once the worker is
/// busy with a backlog, `crash` runs on a thread of its own (kill the
/// broker with SIGKILL, start it again, return once it is back) while
/// publishing goes on. The group exists `settled` before the run starts
/// (see the RabbitMQ test for why). Reports what it measured; fails if a
/// confirmed message was never handled, unless `may_lose` (a broker whose
/// replication is asynchronous: then the loss is measured, not promised).
pub async fn through_a_crash(
    label: &str,
    broker: Arc<dyn Broker>,
    topic: &str,
    n: usize,
    settled: Duration,
    may_lose: bool,
    crash: impl FnOnce() + Send + 'static,
) {
    use pillarbox::{Worker, WorkerOptions};
    broker.ensure_group(topic, "workers").await.unwrap();
    tokio::time::sleep(settled).await;
    let counted = Counted::default();
    let options = WorkerOptions::default().concurrency(2).prefetch(8).poll_wait(Duration::from_millis(200));
    let worker = Worker::new(Arc::clone(&broker), topic, "workers", counted.handler(), options).unwrap();
    let runner = worker.clone();
    let running = tokio::spawn(async move { runner.run().await });

    let mut crash = Some(crash);
    let mut crashing = None;
    let (mut confirmed, mut failed_calls, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    let mut killed_at = None;
    let mut publishing_resumed = None;
    for i in 0..n {
        if i == n / 3 {
            // Mid-consume: the worker is handling a backlog when the broker dies.
            let deadline = Instant::now() + Duration::from_secs(60);
            while counted.handled() < 10 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(counted.handled() >= 10, "the worker never got going");
            killed_at = Some(Instant::now());
            let crash = crash.take().unwrap();
            crashing = Some(tokio::task::spawn_blocking(move || {
                crash();
                Instant::now()
            }));
        }
        let body = format!("job-{i}");
        let started = Instant::now();
        let failed = publish_until_taken(broker.as_ref(), topic, &body, Duration::from_secs(180)).await;
        let took = started.elapsed();
        if let Some(killed) = killed_at {
            if publishing_resumed.is_none() && (failed > 0 || took > Duration::from_millis(500)) {
                publishing_resumed = Some(Instant::now() - killed);
            }
        }
        failed_calls += failed;
        slowest = slowest.max(took);
        confirmed.push(body);
    }
    let back_at = crashing.expect("crashed").await.unwrap();
    let killed_at = killed_at.unwrap();
    let missing = counted.missing_after(&confirmed, Duration::from_secs(180)).await;
    let consuming_resumed = counted.first_after(back_at).map(|t| t - killed_at);
    worker.shutdown();
    running.await.unwrap().unwrap();
    let secs = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    report(&format!(
        "{label}: {} publishes confirmed ({failed_calls} calls failed during the outage and were repeated), \
         {} handled, lost {}, duplicates {}; back {:.1} s after the kill, publishing resumed {} and consuming {} after it",
        confirmed.len(),
        counted.handled(),
        missing.len(),
        counted.duplicates(),
        (back_at - killed_at).as_secs_f64(),
        secs(publishing_resumed),
        secs(consuming_resumed),
    ));
    assert!(
        missing.is_empty() || may_lose,
        "{label}: {} confirmed messages never handled, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        failed_calls > 0 || slowest > Duration::from_millis(500),
        "{label}: no publish failed or waited: the broker was not down while publishing, so this proves nothing"
    );
}
