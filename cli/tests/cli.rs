//! The `pillarbox` command run as operators run it, against the embedded
//! backend and the real Redis and Kafka the test command starts: state is
//! made with the library, then read and changed with the command.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pillarbox::{Broker, DeadLetterReason, Delivery, Message, ReceiveRequest};
use serde_json::Value;

/// One consumer throughout: on Kafka, a second one would start a rebalance.
const CONSUMER: &str = "worker-1";

fn sqlite_url(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("pillarbox-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join(format!("{name}.db")).display())
}

fn redis_url() -> String {
    std::env::var("PILLARBOX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into())
}

fn kafka_url() -> String {
    std::env::var("PILLARBOX_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:19092".into())
}

fn amqp_url() -> String {
    // Started by tests/brokers/start-rabbitmq.sh, with its management API for the figures.
    std::env::var("PILLARBOX_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000".into())
}

fn topic(name: &str) -> String {
    format!("cli.{name}.{:08x}", fastrand_u32())
}

fn fastrand_u32() -> u32 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

/// Runs the command with `args` against `url`, standard input from `stdin` (none: /dev/null).
fn pillarbox(url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pillarbox"));
    command.env_remove("PILLARBOX_URL").arg("--url").arg(url).args(args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().expect("the pillarbox binary runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(output: &Output) -> String {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "exit {:?}\nstdout: {stdout}\nstderr: {stderr}", output.status.code());
    stdout
}

fn json(output: &Output) -> Value {
    let stdout = ok(output);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn receive(broker: &dyn Broker, topic: &str, consumer: &str, n: usize) -> Vec<Delivery> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        let request = ReceiveRequest {
            topic,
            group: "g",
            consumer,
            max: n - got.len(),
            window: n - got.len(),
            wait: Duration::from_secs(1),
            lease: Duration::from_secs(120),
        };
        got.extend(broker.receive(request).await.unwrap());
    }
    assert_eq!(got.len(), n, "received");
    got
}

/// Four messages on `topic` for group `g`: two dead-lettered (kinds
/// `ValueError` and `KeyError`), two still ready.
async fn setup(url: &str, topic: &str) -> std::sync::Arc<dyn Broker> {
    let broker = pillarbox::connect(url).await.unwrap();
    broker.ensure_group(topic, "g").await.unwrap();
    // One key: one partition on Kafka, so the first two received are the first two published.
    let batch = vec![
        Message::new("first").with_key("k"),
        Message::new(vec![0xff, 0xfe]).with_key("k"),
        Message::new("third").with_key("k"),
        Message::new("fourth").with_key("k"),
    ];
    broker.publish(topic, batch).await.unwrap();
    let failing = receive(&*broker, topic, CONSUMER, 2).await;
    let now = SystemTime::now();
    for (d, kind) in failing.iter().zip(["ValueError", "KeyError"]) {
        let reason = DeadLetterReason {
            topic: topic.to_string(),
            group: "g".into(),
            attempts: 3,
            cause: pillarbox::dead_letter::cause::RETRIES_EXHAUSTED.into(),
            error_kind: kind.into(),
            error_message: format!("{kind} in the handler"),
            first_failed_at: now - Duration::from_secs(10),
            last_failed_at: now,
        };
        broker.dead_letter(d, &reason).await.unwrap();
    }
    broker
}

/// Polls `inspect --json` until `wanted` holds (figures may lag on some
/// backends); fails the test if it never does within 20 s.
fn inspect_until(url: &str, topic: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let figures = json(&pillarbox(url, &["--json", "inspect", topic, "g"], None));
        let g = figures[0].clone();
        if wanted(&g) {
            return g;
        }
        if Instant::now() > deadline {
            panic!("the figures never became what the test waits for: {g}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn every_command(url: &str) {
    let t = topic("all");
    let broker = setup(url, &t).await;

    // groups, inspect, lag
    assert_eq!(json(&pillarbox(url, &["--json", "groups", &t], None)), serde_json::json!(["g"]));
    // Kafka's reader fetches ahead: what it holds counts as in flight.
    let not_done = |g: &Value| g["ready"].as_u64().unwrap_or(0) + g["in_flight"].as_u64().unwrap_or(0);
    let g = inspect_until(url, &t, |g| not_done(g) == 2 && g["dead_letters"] == 2);
    assert_eq!((not_done(&g), g["dead_letters"].as_u64()), (2, Some(2)), "{g}");
    let table = ok(&pillarbox(url, &["inspect", &t], None));
    assert!(table.contains("READY") && table.contains(&t), "{table}");
    let lag = json(&pillarbox(url, &["--json", "lag", &t, "g"], None));
    let total: u64 = lag.as_array().unwrap().iter().map(|row| row["lag"].as_u64().unwrap()).sum();
    assert!(total >= 2, "lag {lag}");
    assert!(ok(&pillarbox(url, &["lag", &t, "g"], None)).contains("LOG-END-OFFSET"));

    // consumers: who holds the two ready messages once received
    let held = receive(&*broker, &t, CONSUMER, 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let consumers = json(&pillarbox(url, &["--json", "consumers", &t, "g"], None));
        let holder = consumers.as_array().unwrap().iter().find(|c| c["name"] == CONSUMER).cloned();
        if holder.as_ref().is_some_and(|c| c["holding"].is_null() || c["holding"].as_u64() == Some(2)) {
            break;
        }
        assert!(Instant::now() < deadline, "consumers: {consumers}");
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.ack(&held).await.unwrap();

    // dead letters: list, filter, show
    let all = json(&pillarbox(url, &["--json", "dead-letters", "list", &t, "g"], None));
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0]["reason"]["attempts"], 3);
    assert_eq!(all[0]["reason"]["cause"], "retries_exhausted");
    let value_errors =
        json(&pillarbox(url, &["--json", "dead-letters", "list", &t, "g", "--filter", "kind=ValueError"], None));
    assert_eq!(value_errors.as_array().unwrap().len(), 1);
    let listed = ok(&pillarbox(url, &["dead-letters", "list", &t, "g"], None));
    assert!(listed.contains("KeyError in the handler"), "{listed}");
    let first = all.iter().find(|d| d["reason"]["error_kind"] == "ValueError").unwrap();
    let shown = ok(&pillarbox(url, &["dead-letters", "show", &t, "g", first["id"].as_str().unwrap()], None));
    assert!(shown.contains("payload (5 bytes)\nfirst") && shown.contains("key           k"), "{shown}");
    let binary = all.iter().find(|d| d["reason"]["error_kind"] == "KeyError").unwrap();
    let shown = json(&pillarbox(
        url,
        &["--json", "dead-letters", "show", &t, "g", binary["message_id"].as_str().unwrap()],
        None,
    ));
    assert_eq!(shown["payload_hex"], "fffe", "{shown}");
    let missing = pillarbox(url, &["dead-letters", "show", &t, "g", "no-such-id"], None);
    assert_eq!(missing.status.code(), Some(4), "{}", text(&missing.stderr));

    // purge refused without a terminal or --yes: nothing deleted
    let refused = pillarbox(url, &["dead-letters", "purge", &t, "g"], None);
    assert_eq!(refused.status.code(), Some(5), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("--yes"));
    assert_eq!(json(&pillarbox(url, &["--json", "dead-letters", "list", &t, "g"], None)).as_array().unwrap().len(), 2);

    // redrive: a dry run moves nothing; then one by filter at a rate
    let dry = json(&pillarbox(url, &["--json", "dead-letters", "redrive", &t, "g", "--dry-run"], None));
    assert_eq!(dry["would_redrive"], 2);
    let started = Instant::now();
    let moved = json(&pillarbox(
        url,
        &["--json", "dead-letters", "redrive", &t, "g", "--filter", "kind=ValueError", "--rate", "5/s"],
        None,
    ));
    assert_eq!(moved["redriven"], 1);
    let after = json(&pillarbox(url, &["--json", "dead-letters", "list", &t, "g"], None));
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert_eq!(after[0]["reason"]["error_kind"], "KeyError");
    let again = receive(&*broker, &t, CONSUMER, 1).await;
    assert_eq!(&again[0].message.payload[..], b"first");
    assert_eq!(again[0].message.attempt, 1, "a redriven message starts again");
    broker.ack(&again).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));

    // purge with --yes
    let purged = json(&pillarbox(url, &["--json", "dead-letters", "purge", &t, "g", "--yes"], None));
    assert_eq!(purged["purged"], 1);
    inspect_until(url, &t, |g| g["dead_letters"] == 0);

    // publish: an argument with options, then lines from standard input
    let ids = json(&pillarbox(
        url,
        &["--json", "publish", &t, "payload", "--key", "k1", "--header", "a=b", "--content-type", "text/plain"],
        None,
    ));
    assert_eq!(ids.as_array().unwrap().len(), 1);
    let ids = json(&pillarbox(url, &["--json", "publish", &t, "--lines"], Some("one\ntwo\r\nthree\n")));
    assert_eq!(ids.as_array().unwrap().len(), 3);
    // RabbitMQ pushes ahead to every consumer of the queue: the one that
    // received before stops first, so that this receive gets all four.
    broker.stop_receiving(&t, "g", CONSUMER).await.unwrap();
    let got = receive(&*broker, &t, CONSUMER, 4).await;
    let payloads: Vec<&[u8]> = got.iter().map(|d| &d.message.payload[..]).collect();
    for p in [&b"payload"[..], b"one", b"two", b"three"] {
        assert!(payloads.contains(&p), "{payloads:?}");
    }
    let first = got.iter().find(|d| &d.message.payload[..] == b"payload").unwrap();
    assert_eq!(first.message.key.as_deref(), Some("k1"));
    assert_eq!(first.message.headers.get("a").map(String::as_str), Some("b"));
    assert_eq!(first.message.content_type.as_deref(), Some("text/plain"));
    broker.ack(&got).await.unwrap();

    // watch: figures with rates from the second refresh on
    let watched = ok(&pillarbox(url, &["--json", "watch", &t, "g", "--interval", "200ms", "--count", "2"], None));
    let lines: Vec<Value> = watched.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{watched}");
    assert!(lines[0]["rates"].is_null() && lines[1]["rates"]["backlog_per_second"].is_number(), "{watched}");

    // metrics, scraped over HTTP, once everything is settled
    inspect_until(url, &t, |g| g["ready"] == 0 && g["in_flight"] == 0 && g["waiting"] == 0);
    metrics(url, &t);

    // an unknown group names the groups there are
    let unknown = pillarbox(url, &["inspect", &t, "nope"], None);
    assert_eq!(unknown.status.code(), Some(4));
    assert!(text(&unknown.stderr).contains("its groups: g"), "{}", text(&unknown.stderr));
    broker.close().await.unwrap();
}

/// Six dead letters redriven at 10 a second take half a second at least.
async fn redrive_at_a_rate(url: &str) {
    let t = topic("rate");
    let broker = pillarbox::connect(url).await.unwrap();
    broker.ensure_group(&t, "g").await.unwrap();
    broker.publish(&t, (0..6).map(|i| Message::new(format!("m{i}"))).collect()).await.unwrap();
    let now = SystemTime::now();
    for d in receive(&*broker, &t, CONSUMER, 6).await {
        let reason = DeadLetterReason::unknown(&t, "g", 1, now);
        broker.dead_letter(&d, &reason).await.unwrap();
    }
    let started = Instant::now();
    let moved = json(&pillarbox(url, &["--json", "dead-letters", "redrive", &t, "g", "--rate", "10/s"], None));
    let took = started.elapsed();
    assert_eq!(moved["redriven"], 6);
    assert!(took >= Duration::from_millis(450), "6 at 10/s in {took:?}");
    receive(&*broker, &t, CONSUMER, 6).await;
    broker.close().await.unwrap();
}

fn metrics(url: &str, t: &str) {
    let pair = format!("{t}:g");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pillarbox"))
        .args(["--url", url, "metrics", "--listen", "127.0.0.1:0", &pair])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut first).unwrap();
    let address = first.split("http://").nth(1).and_then(|s| s.split('/').next()).expect(&first).to_string();
    let scrape = |path: &str| {
        let mut s = TcpStream::connect(&address).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    };
    let response = scrape("/metrics");
    child.kill().unwrap();
    let _ = child.wait();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let labels = format!("{{topic=\"{t}\",group=\"g\"}}");
    let value = |name: &str| -> f64 {
        let line = body
            .lines()
            .find(|l| l.starts_with(&format!("{name}{labels} ")))
            .unwrap_or_else(|| panic!("{name}: {body}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("pillarbox_up"), 1.0);
    // What `inspect` said a moment ago: everything handled, nothing waiting.
    for name in [
        "pillarbox_dead_letters",
        "pillarbox_ready_messages",
        "pillarbox_in_flight_messages",
        "pillarbox_waiting_messages",
    ] {
        assert_eq!(value(name), 0.0, "{name}: {body}");
        assert!(body.contains(&format!("# TYPE {name} gauge")), "{body}");
    }
    assert!(body.contains("# TYPE pillarbox_oldest_age_seconds gauge"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_sqlite() {
    every_command(&sqlite_url("every-command")).await;
    redrive_at_a_rate(&sqlite_url("rate")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_redis() {
    every_command(&redis_url()).await;
    redrive_at_a_rate(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_amqp() {
    every_command(&amqp_url()).await;
    redrive_at_a_rate(&amqp_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_kafka() {
    every_command(&kafka_url()).await;
    redrive_at_a_rate(&kafka_url()).await;
}

#[test]
fn check_runs_the_conformance_suite() {
    let output = pillarbox("memory://cli-check", &["check", "--only", "round_trip"], None);
    let stdout = ok(&output);
    assert!(stdout.contains("pass  round_trip_with_all_metadata"), "{stdout}");
    assert!(stdout.contains("all scenarios passed"), "{stdout}");
}

#[test]
fn bad_urls_and_unreachable_brokers_are_clear_errors_without_credentials() {
    let bad = pillarbox("nosuch://x", &["groups", "t"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("unknown URL scheme"), "{}", text(&bad.stderr));

    let option = pillarbox("redis://127.0.0.1:6390?colour=red", &["groups", "t"], None);
    assert_eq!(option.status.code(), Some(2), "{}", text(&option.stderr));

    let unreachable = pillarbox("redis://ops:s3cret-pw@127.0.0.1:1", &["groups", "t"], None);
    assert_eq!(unreachable.status.code(), Some(3), "{}", text(&unreachable.stderr));
    let said = text(&unreachable.stderr);
    assert!(said.contains("cannot reach") && !said.contains("s3cret-pw"), "{said}");

    let no_url = Command::new(env!("CARGO_BIN_EXE_pillarbox"))
        .env_remove("PILLARBOX_URL")
        .args(["groups", "t"])
        .output()
        .unwrap();
    assert_eq!(no_url.status.code(), Some(2));
    assert!(text(&no_url.stderr).contains("PILLARBOX_URL"));

    let filter =
        pillarbox(&sqlite_url("bad-filter"), &["dead-letters", "list", "t", "g", "--filter", "colour=red"], None);
    assert_ne!(filter.status.code(), Some(0));
}

/// `schedules` lists, pauses, resumes, runs now and removes what the
/// library made; `scheduler` publishes its ticks until SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_the_scheduler_on_sqlite() {
    use pillarbox::schedule::{Schedule, When};

    let url = sqlite_url("schedules");
    let broker = pillarbox::connect(&url).await.unwrap();
    let t = topic("sched");
    broker.ensure_group(&t, "g").await.unwrap();
    let store = broker.schedule_store().unwrap();
    let nightly = When::Cron { expression: "30 2 * * *".into(), zone: "Europe/Berlin".into() };
    store.upsert(&Schedule::new("nightly-import", nightly, &t, &Message::new("import")).unwrap()).await.unwrap();
    let every = When::Every { every_ms: 1000, anchor_ms: None };
    store.upsert(&Schedule::new("heartbeat", every, &t, &Message::new("beat")).unwrap()).await.unwrap();

    let table = ok(&pillarbox(&url, &["schedules"], None));
    assert!(table.contains("nightly-import") && table.contains("cron 30 2 * * * (Europe/Berlin)"), "{table}");
    assert!(table.contains("every 1s"), "{table}");
    ok(&pillarbox(&url, &["schedules", "pause", "nightly-import"], None));
    let listed = json(&pillarbox(&url, &["--json", "schedules"], None));
    let nightly = listed.as_array().unwrap().iter().find(|s| s["name"] == "nightly-import").unwrap().clone();
    assert_eq!((nightly["paused"].as_bool(), nightly["zone"].as_str()), (Some(true), Some("Europe/Berlin")));
    assert!(nightly["next_run_ms"].is_null(), "paused: no next run");
    ok(&pillarbox(&url, &["schedules", "resume", "nightly-import"], None));
    // Run now: its message goes out at once; its next tick stays planned.
    let ran = json(&pillarbox(&url, &["--json", "schedules", "run", "nightly-import"], None));
    let id = ran["message_id"].as_str().unwrap().to_string();
    let request = pillarbox::ReceiveRequest {
        topic: &t,
        group: "g",
        consumer: "c",
        max: 10,
        window: 10,
        wait: Duration::from_secs(5),
        lease: Duration::from_secs(30),
    };
    let got = broker.receive(request).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].message.id.as_str(), &got[0].message.payload[..]), (id.as_str(), &b"import"[..]));
    assert_eq!(got[0].message.schedule.as_deref(), Some("nightly-import"));
    broker.ack(&got).await.unwrap();
    let after = json(&pillarbox(&url, &["--json", "schedules"], None));
    let nightly = after.as_array().unwrap().iter().find(|s| s["name"] == "nightly-import").unwrap().clone();
    assert!(nightly["last_run_ms"].is_null() && nightly["next_run_ms"].is_u64(), "{nightly}");
    for missing in [["schedules", "remove", "no-such-schedule"], ["schedules", "run", "no-such-schedule"]] {
        let out = pillarbox(&url, &missing, None);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    }
    ok(&pillarbox(&url, &["schedules", "remove", "nightly-import"], None));

    // The scheduler publishes the heartbeat's ticks until SIGTERM.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pillarbox"))
        .env_remove("PILLARBOX_URL")
        .args(["--url", &url, "scheduler"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.inspect(&t, "g").await.unwrap().ready < 2 {
        assert!(Instant::now() < deadline, "the scheduler published fewer than 2 ticks in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let listed = json(&pillarbox(&url, &["--json", "schedules"], None));
    assert!(listed[0]["last_message_id"].is_string(), "{listed}");
}
