//! Redis-specific behaviour beyond the conformance suite, against the test
//! server (tests/brokers/start-redis.sh; `PILLARBOX_REDIS_URL` overrides).
#![cfg(feature = "redis")]

use std::time::Duration;

use pillarbox::{connect, Message, ReceiveRequest};

fn url() -> String {
    std::env::var("PILLARBOX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into())
}

fn topic(name: &str) -> String {
    format!("rb.{name}.{}", &uuid_suffix())
}

fn uuid_suffix() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    )
}

/// `max_len` bounds a topic by refusing publishes, never by trimming what a
/// group has not consumed; consumed entries are trimmed and make room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_len_refuses_rather_than_trims_unconsumed() {
    let broker = connect(&format!("{}?max_len=5", url())).await.unwrap();
    let t = topic("maxlen");
    broker.ensure_group(&t, "g").await.unwrap();
    broker.publish(&t, (0..5).map(|i| Message::new(format!("m{i}"))).collect()).await.unwrap();
    let full = broker.publish(&t, vec![Message::new("one too many")]).await.unwrap_err();
    assert_eq!(full.code(), "QUEUE_FULL", "{full}");
    // All five are still there for the group.
    let stats = broker.inspect(&t, "g").await.unwrap();
    assert_eq!(stats.ready, 5, "{stats:?}");
    let got = broker
        .receive(ReceiveRequest {
            topic: &t,
            group: "g",
            consumer: "c",
            max: 5,
            window: 5,
            wait: Duration::from_secs(5),
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
    // Received but not acked: still unconsumed, still full.
    assert_eq!(broker.publish(&t, vec![Message::new("still full")]).await.unwrap_err().code(), "QUEUE_FULL");
    broker.ack(&got).await.unwrap();
    broker.publish(&t, vec![Message::new("room again")]).await.unwrap();
    let got = broker
        .receive(ReceiveRequest {
            topic: &t,
            group: "g",
            consumer: "c",
            max: 5,
            window: 5,
            wait: Duration::from_secs(5),
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.payload[..], b"room again");
}

/// A plain redis client's XADD is consumed; a Pillarbox message reads well
/// in a plain client (metadata as named fields, payload as `payload`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_interoperate() {
    let broker = connect(&url()).await.unwrap();
    let t = topic("plain");
    broker.ensure_group(&t, "g").await.unwrap();
    broker.publish(&t, vec![Message::new("from pillarbox").with_key("k1")]).await.unwrap();

    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("pb:{{{t}}}:stream");
    let entries: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    let fields = &entries.ids[0].map;
    let text = |k: &str| match fields.get(k) {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("field {k}: {other:?}"),
    };
    assert_eq!(text("payload"), "from pillarbox");
    assert_eq!(text("pb-key"), "k1");
    assert!(!text("pb-id").is_empty());

    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("payload")
        .arg("from redis-cli")
        .arg("source")
        .arg("cli")
        .query_async(&mut conn)
        .await
        .unwrap();
    let got = broker
        .receive(ReceiveRequest {
            topic: &t,
            group: "g",
            consumer: "c",
            max: 10,
            window: 10,
            wait: Duration::from_secs(5),
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(&got[1].message.payload[..], b"from redis-cli");
    assert_eq!(got[1].message.headers.get("source").map(String::as_str), Some("cli"));
    assert_eq!(got[1].message.attempt, 1);
    broker.ack(&got).await.unwrap();
}

/// Bad URLs and options are clear errors that never show the password.
#[tokio::test]
async fn bad_urls_and_unreachable_servers() {
    let e = connect("redis://127.0.0.1:6390?max_len=0").await.unwrap_err();
    assert_eq!(e.code(), "INVALID_OPTION");
    let e = connect("redis://127.0.0.1:6390?bogus=1").await.unwrap_err();
    assert_eq!(e.code(), "INVALID_OPTION");
    // Nothing listens on port 1.
    let e = connect("redis://user:hunter2@127.0.0.1:1?connect_timeout_ms=500").await.unwrap_err();
    assert_eq!(e.code(), "CONNECT", "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("user:***@127.0.0.1:1"), "{e}");
}

/// An ack settles exactly the deliveries given: another consumer's entries
/// between them stay pending, and an id settled already is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_settle_exactly_their_batch() {
    let broker = connect(&url()).await.unwrap();
    let t = topic("acks");
    broker.ensure_group(&t, "g").await.unwrap();
    let take = |consumer: &'static str, max: usize| {
        let broker = broker.clone();
        let t = t.clone();
        async move {
            let req = ReceiveRequest {
                topic: &t,
                group: "g",
                consumer,
                max,
                window: max,
                wait: Duration::from_secs(5),
                lease: Duration::from_secs(30),
            };
            broker.receive(req).await.unwrap()
        }
    };
    // a holds the first and the last entry, b the 200 between them.
    broker.publish(&t, vec![Message::new("first")]).await.unwrap();
    let mut a = take("a", 1).await;
    broker.publish(&t, (0..200).map(|i| Message::new(format!("m{i}"))).collect()).await.unwrap();
    let b = take("b", 200).await;
    assert_eq!(b.len(), 200);
    broker.publish(&t, vec![Message::new("last")]).await.unwrap();
    a.extend(take("a", 1).await);
    assert_eq!(a.len(), 2);

    // b's 200 entries lie between a's two: untouched.
    broker.ack(&a).await.unwrap();
    assert_eq!(broker.inspect(&t, "g").await.unwrap().in_flight, Some(200));
    let again = broker.ack(&a[..1]).await.unwrap_err();
    assert_eq!(again.code(), "LEASE_LOST", "{again}");

    // One settled id in a batch: the rest are acked, and the batch reports
    // how many were settled already (one XACK per batch cannot say which).
    broker.ack(&b[10..11]).await.unwrap();
    let err = broker.ack(&b[..20]).await.unwrap_err();
    assert_eq!(err.code(), "LEASE_LOST", "{err}");
    assert!(matches!(err, pillarbox::Error::LeaseLost { message_id: None, count: 1 }), "{err:?}");
    assert!(err.to_string().contains("the leases on 1 of the messages settled together"), "{err}");
    assert_eq!(broker.inspect(&t, "g").await.unwrap().in_flight, Some(180));

    // A batch mixing topic-stream entries and the group's due stream (two
    // retries due now): every one is acked, and the due entries are deleted.
    for d in &b[20..22] {
        let mut again = Message::clone(&d.message);
        again.deliver_at = None;
        broker.retry(d, again).await.unwrap();
    }
    let mut retried = take("b", 2).await;
    assert_eq!(retried.len(), 2);
    let due_key = format!("pb:{{{t}}}:due:g");
    let mut raw = redis::Client::open(url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let due_len: usize = redis::cmd("XLEN").arg(&due_key).query_async(&mut raw).await.unwrap();
    assert_eq!(due_len, 2);
    retried.extend(b[22..].iter().cloned());
    broker.ack(&retried).await.unwrap();
    assert_eq!(broker.inspect(&t, "g").await.unwrap().in_flight, Some(0));
    let due_len: usize = redis::cmd("XLEN").arg(&due_key).query_async(&mut raw).await.unwrap();
    assert_eq!(due_len, 0, "acked due entries are deleted");
}

/// Where Redis cannot tell a group's lag (an entry after the group's
/// position was deleted), `inspect` still counts what is ready, a page at a
/// time in Redis rather than bringing every entry over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_counts_ready_messages_when_redis_cannot_tell_the_lag() {
    const COUNT: usize = 2500; // past two pages of the count
    let broker = connect(&url()).await.unwrap();
    let t = topic("lag");
    broker.ensure_group(&t, "g").await.unwrap();
    broker.publish(&t, (0..COUNT).map(|i| Message::new(format!("m{i}"))).collect()).await.unwrap();
    let got = broker
        .receive(ReceiveRequest {
            topic: &t,
            group: "g",
            consumer: "c",
            max: 2,
            window: 2,
            wait: Duration::from_secs(5),
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 2);

    // Delete one entry the group has not read yet, as XDEL from redis-cli would.
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("pb:{{{t}}}:stream");
    let next: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").arg("COUNT").arg(3).query_async(&mut conn).await.unwrap();
    let _: u64 = redis::cmd("XDEL").arg(&stream).arg(&next.ids[2].id).query_async(&mut conn).await.unwrap();
    let groups: Vec<Vec<redis::Value>> =
        redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut conn).await.unwrap();
    let lag = groups[0].chunks(2).find(|kv| kv[0] == redis::Value::BulkString(b"lag".to_vec())).map(|kv| &kv[1]);
    assert_eq!(lag, Some(&redis::Value::Nil), "Redis still knows the lag: {groups:?}");

    let stats = broker.inspect(&t, "g").await.unwrap();
    assert_eq!(stats.ready, (COUNT - 3) as u64, "{stats:?}");
    assert_eq!(stats.in_flight, Some(2), "{stats:?}");
    broker.ack(&got).await.unwrap();
}

/// Three schedulers on three connections share Redis's schedule and
/// idempotency stores: an every-second schedule, 10 simulated seconds,
/// each tick published once; concurrent upserts leave one schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedulers_sharing_redis_publish_each_tick_once() {
    use std::sync::Arc;
    use std::time::SystemTime;

    use pillarbox::schedule::{Schedule, Scheduler, Upserted, When};

    let t = topic("sched");
    let name = format!("every-second-{}", uuid_suffix());
    let mut schedulers = Vec::new();
    for _ in 0..3 {
        let broker = connect(&url()).await.unwrap();
        broker.ensure_group(&t, "g").await.unwrap();
        schedulers.push(Scheduler::for_broker(broker).unwrap());
    }
    let reader = connect(&url()).await.unwrap();
    let store = reader.schedule_store().unwrap();
    let schedule =
        Schedule::new(&name, When::Every { every_ms: 1000, anchor_ms: None }, &t, &Message::new("tick")).unwrap();
    let upserts: Vec<_> = (0..20)
        .map(|_| {
            let (store, schedule) = (Arc::clone(&store), schedule.clone());
            tokio::spawn(async move { store.upsert(&schedule).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    for upsert in upserts {
        created += usize::from(upsert.await.unwrap() == Upserted::Created);
    }
    assert_eq!(created, 1, "one of 20 concurrent upserts created it, the others changed nothing");
    let start = SystemTime::now();
    let mut ticks = Vec::new();
    for step in 1..=100u64 {
        for (n, scheduler) in schedulers.iter().enumerate() {
            let now = start + Duration::from_millis(step * 100 + n as u64 * 7);
            let pass = scheduler.run_once(now).await.unwrap();
            ticks.extend(pass.published.into_iter().filter(|p| p.schedule == name).map(|p| p.tick));
        }
    }
    let all = ticks.len();
    ticks.dedup();
    assert_eq!(all, ticks.len(), "a tick published twice");
    assert!((9..=10).contains(&all), "{all} ticks in 10 s");
    assert_eq!(reader.inspect(&t, "g").await.unwrap().ready, all as u64);
    let stored = store.list().await.unwrap().into_iter().find(|s| s.schedule.name == name).unwrap();
    assert_eq!(stored.last_tick, ticks.last().copied());
    assert_eq!(stored.schedule, schedule);
    assert!(store.set_paused(&name, true).await.unwrap());
    assert!(store.remove(&name).await.unwrap());
    assert!(!store.remove(&name).await.unwrap());
}
