//! Kafka specifics against the real broker started by
//! tests/brokers/start-kafka.sh: rebalances lose nothing, a killed
//! consumer's messages reach another consumer, lag per partition, bad URLs,
//! the default window.
//!
//! The kill test re-runs this binary as the doomed consumer, selected by
//! the `PB_KAFKA_ROLE` environment variable.
#![cfg(feature = "kafka")]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pillarbox::{connect, Broker, HandlerError, Job, Message, Worker, WorkerOptions};

fn url(extra: &str) -> String {
    // RUST_LOG=pillarbox=debug shows assignments and revocations.
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let base = std::env::var("PILLARBOX_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:19092".into());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}partitions=6&session_timeout_ms=6000{extra}")
}

fn unique(name: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}.{}.{n}", std::process::id())
}

/// Payload -> every attempt number it was handled with.
type Handled = Arc<Mutex<HashMap<String, Vec<u32>>>>;

fn recorder(handled: &Handled, pause: Duration) -> impl pillarbox::Handler {
    let handled = Arc::clone(handled);
    move |job: Job| {
        let handled = Arc::clone(&handled);
        async move {
            tokio::time::sleep(pause).await;
            let body = String::from_utf8_lossy(&job.message.payload).into_owned();
            handled.lock().unwrap().entry(body).or_default().push(job.attempt());
            Ok::<(), HandlerError>(())
        }
    }
}

fn start(
    broker: &Arc<dyn Broker>,
    topic: &str,
    handler: impl pillarbox::Handler,
) -> (Worker, tokio::task::JoinHandle<()>) {
    let opts = WorkerOptions::default().concurrency(4).poll_wait(Duration::from_millis(200));
    let worker = Worker::new(Arc::clone(broker), topic, "g", handler, opts).unwrap();
    let runner = worker.clone();
    let task = tokio::spawn(async move { runner.run().await.unwrap() });
    (worker, task)
}

/// A fresh worker handles `expected` distinct messages (waiting a moment
/// longer for any duplicate); returns each body's attempts.
async fn handle_the_rest(broker: &Arc<dyn Broker>, topic: &str, expected: usize) -> HashMap<String, Vec<u32>> {
    let handled: Handled = Arc::default();
    let (w, t) = start(broker, topic, recorder(&handled, Duration::ZERO));
    let ok = wait_until(Duration::from_secs(60), || handled.lock().unwrap().len() == expected).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.shutdown();
    t.await.unwrap();
    let handled = handled.lock().unwrap().clone();
    assert!(ok, "handled {} of {expected}", handled.len());
    handled
}

async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Consumers join and leave while 600 messages are handled: each newcomer
/// takes a share of the work, every message is handled, none twice (a
/// revoked partition is given up only once what was handed out from it is
/// settled; with `revoke_wait_ms=0` this test sees duplicates), and
/// everything ends committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalances_lose_nothing() {
    let topic = unique("rebalance");
    let a: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    a.ensure_group(&topic, "g").await.unwrap();
    let batch: Vec<Message> = (0..600).map(|i| Message::new(format!("m{i}")).with_key(format!("k{i}"))).collect();
    a.publish(&topic, batch).await.unwrap();
    let handled: Handled = Arc::default();
    let count = |h: &Handled| h.lock().unwrap().len();
    let run = |broker: &Arc<dyn Broker>| {
        // 20 messages a second each: the first worker alone would need 30 s.
        let opts = WorkerOptions::default().concurrency(1).prefetch(4).poll_wait(Duration::from_millis(200));
        let handler = recorder(&handled, Duration::from_millis(50));
        let worker = Worker::new(Arc::clone(broker), &topic, "g", handler, opts).unwrap();
        let runner = worker.clone();
        (worker, tokio::spawn(async move { runner.run().await.unwrap() }))
    };
    let (wa, ta) = run(&a);
    assert!(wait_until(Duration::from_secs(30), || count(&handled) >= 20).await, "first worker handled nothing");
    let b: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    let (wb, tb) = run(&b);
    let b_works = wait_until(Duration::from_secs(30), || wb.stats().succeeded >= 5).await;
    assert!(b_works, "second worker got no share: {:?}", wb.stats());
    let c: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    let (wc, tc) = run(&c);
    let c_works = wait_until(Duration::from_secs(30), || wc.stats().succeeded >= 5).await;
    assert!(c_works, "third worker got no share: {:?} (a {:?}, b {:?})", wc.stats(), wa.stats(), wb.stats());
    wa.shutdown();
    ta.await.unwrap();
    let all = wait_until(Duration::from_secs(60), || count(&handled) >= 600).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wb.shutdown();
    wc.shutdown();
    tb.await.unwrap();
    tc.await.unwrap();
    assert!(all, "handled {} of 600", count(&handled));
    let handled = handled.lock().unwrap().clone();
    let twice: Vec<_> = handled.iter().filter(|(_, attempts)| attempts.len() > 1).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    let s = a.inspect(&topic, "g").await.unwrap();
    assert_eq!((s.ready, s.in_flight, s.waiting), (0, Some(0), 0), "not all committed: {s:?}");
    assert_eq!(s.partitions.len(), 6);
    assert!(s.partitions.iter().all(|p| p.lag == 0 && p.committed == Some(p.end)), "{:?}", s.partitions);
}

/// The doomed consumer: takes messages, reports how many, then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doomed_consumer_process() {
    let Ok(topic) = std::env::var("PB_KAFKA_TOPIC") else { return };
    let broker = connect(&url("")).await.unwrap();
    let held = support::receive_n(&*broker, &topic, "doomed", 5, Duration::from_secs(30)).await;
    let bodies: Vec<String> = held.iter().map(|d| String::from_utf8_lossy(&d.message.payload).into_owned()).collect();
    println!("holding {}", bodies.join(","));
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// A consumer killed with messages in hand: they reach another consumer,
/// as a second attempt, and nothing is handled twice. Messages its delivery
/// record claimed ahead without handing them out may count a second
/// attempt too (never more).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_consumer_messages_reach_another() {
    if std::env::var("PB_KAFKA_TOPIC").is_ok() {
        return;
    }
    let topic = unique("killed");
    let broker: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, (0..20).map(|i| Message::new(format!("m{i}"))).collect()).await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "doomed_consumer_process", "--nocapture", "--test-threads=1"])
        .env("PB_KAFKA_TOPIC", &topic)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut held = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // (libtest prints the test's name on the same line.)
        if let Some((_, rest)) = line.split_once("holding ") {
            held = rest.trim().to_string();
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no goodbye to the group, no commit
    child.wait().unwrap();
    let held: Vec<String> = held.split(',').filter(|s| !s.is_empty()).map(String::from).collect();
    assert_eq!(held.len(), 5, "the doomed consumer held {held:?}");

    let handled = handle_the_rest(&broker, &topic, 20).await;
    for (body, attempts) in &handled {
        assert_eq!(attempts.len(), 1, "{body} handled {attempts:?}");
        if held.contains(body) {
            assert_eq!(attempts, &vec![2], "{body} was held when the consumer died");
        } else {
            assert!(attempts[0] <= 2, "{body} at attempt {attempts:?}");
        }
    }
}

/// A consumer that leaves cleanly leaves a record of exactly what it handed
/// out: the record's lead (claimed, never handed out) counts no attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_leave_records_exactly_what_was_handed_out() {
    let topic = unique("leave");
    let broker: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, (0..30).map(|i| Message::new(format!("m{i}"))).collect()).await.unwrap();
    let first = support::receive_n(&*broker, &topic, "leaver", 4, Duration::from_secs(30)).await;
    assert_eq!(first.len(), 4);
    broker.ack(&first).await.unwrap();
    broker.stop_receiving(&topic, "g", "leaver").await.unwrap();

    let handled = handle_the_rest(&broker, &topic, 26).await;
    for (body, attempts) in &handled {
        assert_eq!(attempts, &vec![1], "{body}");
    }
}

/// With default options a Kafka worker holds `PARTITIONED_PREFETCH`
/// messages beyond its handler (a window of one ran at a tenth of the rate),
/// and everything it held is handled once the handler moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_window_holds_a_batch_ahead() {
    let topic = unique("window");
    let broker: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, (0..150).map(|i| Message::new(format!("m{i}"))).collect()).await.unwrap();
    // The handler waits until the gate closes: what was received is held.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = Arc::clone(&gate);
    let handler = move |_job: Job| {
        let g = Arc::clone(&g);
        async move {
            let _ = g.acquire().await;
            Ok::<(), HandlerError>(())
        }
    };
    let worker = Worker::new(Arc::clone(&broker), &topic, "g", handler, WorkerOptions::default()).unwrap();
    let runner = worker.clone();
    let task = tokio::spawn(async move { runner.run().await.unwrap() });
    let held = 1 + pillarbox::PARTITIONED_PREFETCH as u64;
    wait_until(Duration::from_secs(20), || worker.stats().received >= held).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = worker.stats().received;
    // Released before asserting, so that a failure ends rather than hangs.
    gate.close();
    let all_handled = wait_until(Duration::from_secs(30), || worker.stats().succeeded == 150).await;
    worker.shutdown();
    task.await.unwrap();
    assert_eq!(received, held, "one handler and the default prefetch");
    assert!(all_handled, "{:?}", worker.stats());
}

/// The reading task reuses the messages the worker is done with for the
/// next ones it reads: a plain message read into the allocation of one
/// that carried every field arrives with none of them. Published one at a
/// time, each once the one before was handled, so that the first one's
/// allocation is back in the reading task before the later ones are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reused_messages_carry_nothing_of_the_one_before() {
    let topic = unique("reuse");
    let broker: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    // Copies, not the shared message: a message still held is never reused.
    let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
    let s = Arc::clone(&seen);
    let handler = move |job: Job| {
        let s = Arc::clone(&s);
        async move {
            s.lock().unwrap().push(Message::clone(&job.message));
            Ok::<(), HandlerError>(())
        }
    };
    let worker = Worker::new(Arc::clone(&broker), &topic, "g", handler, WorkerOptions::default()).unwrap();
    let runner = worker.clone();
    let task = tokio::spawn(async move { runner.run().await.unwrap() });
    let mut full = Message::new("full")
        .with_key("k")
        .with_content_type("text/plain")
        .with_header("tenant", "acme")
        .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    full.tracestate = Some("vendor=1".into());
    let plain: Vec<Message> = (0..6).map(|i| Message::new(format!("plain{i}"))).collect();
    let mut all_handled = true;
    for (n, m) in std::iter::once(&full).chain(&plain).enumerate() {
        broker.publish(&topic, vec![m.clone()]).await.unwrap();
        all_handled &= wait_until(Duration::from_secs(20), || seen.lock().unwrap().len() == n + 1).await;
    }
    worker.shutdown();
    task.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(all_handled, "handled {} of 7", seen.len());
    assert_eq!(seen[0].headers.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!((seen[0].key.as_deref(), seen[0].tracestate.as_deref()), (Some("k"), Some("vendor=1")));
    for (got, sent) in seen[1..].iter().zip(&plain) {
        assert_eq!((&got.id, &got.payload), (&sent.id, &sent.payload));
        assert!(got.headers.is_empty(), "{got:?}");
        assert_eq!((&got.key, &got.content_type, &got.idempotency_key), (&None, &None, &None), "{got:?}");
        assert_eq!((&got.traceparent, &got.tracestate, got.attempt), (&None, &None, 1), "{got:?}");
        assert_eq!(got.published_at, sent.published_at, "{got:?}");
    }
}

/// A receive waiting on an empty topic when its consumer stops returns at
/// once, not when its wait runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_ends_a_waiting_receive() {
    let topic = unique("stop");
    let broker: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    let receiving = {
        let (broker, topic) = (Arc::clone(&broker), topic.clone());
        tokio::spawn(async move {
            let request = pillarbox::ReceiveRequest {
                topic: &topic,
                group: "g",
                consumer: "c",
                max: 10,
                window: 10,
                wait: Duration::from_secs(30),
                lease: Duration::from_secs(30),
            };
            let started = Instant::now();
            let got = broker.receive(request).await;
            (got.map(|d| d.len()), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.stop_receiving(&topic, "g", "c").await.unwrap();
    let (got, took) = receiving.await.unwrap();
    assert!(matches!(got, Ok(0) | Err(pillarbox::Error::Closed)), "{got:?}");
    assert!(took < Duration::from_secs(10), "the receive waited {took:?}");
}

/// A broker dropped without `close` while its consumer reads: the consumer
/// leaves the group, so another takes its partitions at once rather than
/// never (its heartbeats would have kept it a member).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_broker_leaves_the_group() {
    let topic = unique("dropped");
    let broker: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, (0..20).map(|i| Message::new(format!("m{i}"))).collect()).await.unwrap();
    let first = {
        let dropped: Arc<dyn Broker> = connect(&url("")).await.unwrap();
        let got = support::receive_n(&*dropped, &topic, "dropped", 4, Duration::from_secs(30)).await;
        dropped.ack(&got).await.unwrap();
        got.len()
    };
    assert_eq!(first, 4);
    let started = Instant::now();
    let handled = handle_the_rest(&broker, &topic, 16).await;
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(handled.values().all(|a| a.len() == 1), "{handled:?}");
}

/// A dead letter on the topic itself, as any Kafka tool reads it: keyed by
/// message id, with the reason and where the message was read from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_records_carry_reason_partition_and_offset() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message as _};

    let topic = unique("dlq");
    let broker = connect(&url("")).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, vec![Message::new("doomed")]).await.unwrap();
    let got = support::receive(&*broker, &topic, "c", 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    let now = std::time::SystemTime::now();
    let reason = pillarbox::DeadLetterReason {
        topic: topic.clone(),
        group: "g".into(),
        attempts: 1,
        cause: "not_retryable".into(),
        error_kind: "Test".into(),
        error_message: "raw check".into(),
        first_failed_at: now,
        last_failed_at: now,
    };
    broker.dead_letter(&got[0], &reason).await.unwrap();

    let servers = url("").trim_start_matches("kafka://").split('?').next().unwrap().to_string();
    let raw: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "raw-dlq-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&format!("{topic}.g.dlq"), 0, rdkafka::Offset::Beginning).unwrap();
    raw.assign(&tpl).unwrap();
    let record = tokio::task::spawn_blocking(move || raw.poll(Duration::from_secs(20)).unwrap().unwrap().detach())
        .await
        .unwrap();
    assert_eq!(record.key(), Some(got[0].message.id.as_bytes()));
    let headers: HashMap<String, String> = record
        .headers()
        .unwrap()
        .iter()
        .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
        .collect();
    assert_eq!(headers.get("pb-dl-cause").map(String::as_str), Some("not_retryable"));
    assert!(headers.get("pb-dl-partition").is_some_and(|p| p.parse::<i32>().is_ok_and(|p| (0..6).contains(&p))));
    assert_eq!(headers.get("pb-dl-offset").map(String::as_str), Some("0"));
    assert_eq!(record.payload(), Some(&b"doomed"[..]));
}

/// Lag per partition as `kafka-consumer-groups --describe` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lag_per_partition() {
    let topic = unique("lag");
    let broker: Arc<dyn Broker> = connect(&url("")).await.unwrap();
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, (0..30).map(|i| Message::new("x").with_key(format!("key{i}"))).collect()).await.unwrap();
    let s = broker.inspect(&topic, "g").await.unwrap();
    assert_eq!(s.ready, 30);
    assert_eq!(s.partitions.len(), 6);
    assert_eq!(s.partitions.iter().map(|p| p.lag).sum::<i64>(), 30);
    assert!(s.partitions.iter().all(|p| p.committed.is_none() && p.lag == p.end), "{:?}", s.partitions);
    assert!(s.partitions.iter().filter(|p| p.end > 0).count() > 1, "keys should spread: {:?}", s.partitions);
}

#[tokio::test]
async fn unreachable_broker_and_bad_urls_are_clear_errors() {
    let e = connect("kafka://alice:secretpw@127.0.0.1:1?connect_timeout_ms=1000").await.unwrap_err();
    assert_eq!(e.code(), "CONNECT", "{e}");
    assert!(!e.to_string().contains("secretpw"), "{e}");
    let e = connect("kafka://127.0.0.1").await.unwrap_err();
    assert_eq!(e.code(), "INVALID_URL", "{e}");
    let e = connect("kafka://127.0.0.1:19092?partitions=many").await.unwrap_err();
    assert_eq!(e.code(), "INVALID_OPTION", "{e}");
    let broker = connect(&url("")).await.unwrap();
    let e = broker.publish("orders.dlq", vec![Message::new("x")]).await.unwrap_err();
    assert_eq!(e.code(), "INVALID_MESSAGE", "{e}");
}

/// SASL/PLAIN on the broker's authenticated listener: a round trip with the
/// right password; the wrong one is a clear error that never shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_authentication() {
    let sasl = std::env::var("PILLARBOX_KAFKA_SASL_ADDR").unwrap_or_else(|_| "127.0.0.1:19094".into());
    let broker = connect(&format!("kafka://alice:alice-test@{sasl}")).await.unwrap();
    let topic = unique("sasl");
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, vec![Message::new("over sasl")]).await.unwrap();
    let got = support::receive(&*broker, &topic, "c", 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.payload[..], b"over sasl");
    broker.ack(&got).await.unwrap();
    broker.close().await.unwrap();

    // A password with `+`, `&` and `=`, written as it is and percent-encoded.
    for written in ["p+ss&w=rd", "p%2Bss%26w%3Drd"] {
        let broker = connect(&format!("kafka://carol:{written}@{sasl}?connect_timeout_ms=10000"))
            .await
            .unwrap_or_else(|e| panic!("{written}: {e}"));
        broker.publish(&topic, vec![Message::new("carol")]).await.unwrap_or_else(|e| panic!("{written}: {e}"));
        broker.close().await.unwrap();
    }

    let e = connect(&format!("kafka://alice:wrong-secret@{sasl}?connect_timeout_ms=3000")).await.unwrap_err();
    assert_eq!(e.code(), "CONNECT", "{e}");
    assert!(!e.to_string().contains("wrong-secret"), "{e}");
}
