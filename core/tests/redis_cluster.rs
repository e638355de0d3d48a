//! A Redis Cluster (tests/brokers/start-redis-cluster.sh: three primaries,
//! three replicas on 127.0.0.1:7101-7106): topics reached through one seed
//! node spread over the shards, and the primary of a topic's slot killed
//! with SIGKILL mid-stream, without and with `wait_replicas=1`. Redis
//! replicates asynchronously, so without WAIT a failover may lose what the
//! dead primary had confirmed: that run measures it; with WAIT nothing
//! confirmed may be lost. (The conformance suite runs on the cluster too.)
#![cfg(feature = "redis")]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pillarbox::connect;

const FIRST_PORT: u16 = 7101;

fn seeds() -> String {
    std::env::var("PILLARBOX_REDIS_CLUSTER_URL")
        .unwrap_or_else(|_| format!("redis+cluster://127.0.0.1:{FIRST_PORT},127.0.0.1:{}", FIRST_PORT + 1))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `redis-cli -p PORT ARGS...`, its output.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// The port of the primary now serving `key`'s slot, asking any live node.
fn primary_of(key: &str) -> Option<u16> {
    (FIRST_PORT..FIRST_PORT + 6).find_map(|port| {
        let slot: u16 = cli(port, &["cluster", "keyslot", key]).trim().parse().ok()?;
        // `cluster shards` is Redis 7; `cluster slots` lines: start, end, then the primary's ip and port.
        let slots = cli(port, &["cluster", "slots"]);
        let lines: Vec<&str> = slots.lines().map(str::trim).collect();
        lines.windows(4).find_map(|w| {
            let (start, end) = (w[0].parse::<u16>().ok()?, w[1].parse::<u16>().ok()?);
            (start <= slot && slot <= end && w[2] == "127.0.0.1").then(|| w[3].parse().ok()).flatten()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_through_one_seed_node_spread_over_the_shards() {
    // The case that failed before cluster support: one node's URL, many
    // topics (twelve: all on one of three shards by chance is 1 in 177,147).
    let broker = connect(&format!("redis+cluster://127.0.0.1:{FIRST_PORT}")).await.unwrap();
    let suffix = fastrand::u32(..);
    let mut primaries = BTreeSet::new();
    for n in 0..12 {
        let topic = format!("spread-{suffix}-{n}");
        broker.ensure_group(&topic, "g").await.unwrap();
        broker.publish(&topic, vec![pillarbox::Message::new(format!("m{n}"))]).await.unwrap();
        let got = support::receive_n(broker.as_ref(), &topic, "c", 1, Duration::from_secs(20)).await;
        assert_eq!(&got[0].message.payload[..], format!("m{n}").as_bytes());
        broker.ack(&got).await.unwrap();
        primaries.insert(primary_of(&format!("pb:{{{topic}}}:stream")).expect("a primary serves the slot"));
    }
    assert!(primaries.len() >= 2, "twelve topics all on one shard ({primaries:?}): the test proves nothing");
}

/// Kills the primary serving `topic` with SIGKILL, waits until a replica
/// serves its slot, then starts the dead node again (it rejoins as a
/// replica).
fn fail_over(topic: &str) -> impl FnOnce() + Send + 'static {
    let key = format!("pb:{{{topic}}}:stream");
    move || {
        let victim = primary_of(&key).expect("a primary serves the topic");
        let pidfile = repo().join(format!(".pillarbox-test/redis-cluster/{victim}/redis.pid"));
        let pid = std::fs::read_to_string(&pidfile).expect("the node's pid file").trim().to_string();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while primary_of(&key).is_none_or(|p| p == victim) {
            assert!(Instant::now() < deadline, "no replica took over from {victim} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let restarted = Command::new("bash").arg(repo().join("tests/brokers/start-redis-cluster.sh")).output().unwrap();
        assert!(restarted.status.success(), "{}", String::from_utf8_lossy(&restarted.stderr));
    }
}

/// Both runs in one test: they kill nodes of the same cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_mid_stream_without_and_with_wait() {
    for (label, options, may_lose) in [
        ("Redis Cluster, the topic's primary SIGKILLed (asynchronous replication)", "", true),
        (
            "Redis Cluster, the topic's primary SIGKILLed, wait_replicas=1",
            "?wait_replicas=1&wait_timeout_ms=2000",
            false,
        ),
    ] {
        let broker = connect(&format!("{}{options}", seeds())).await.unwrap();
        let topic = format!("failover-{}", fastrand::u32(..));
        let crash = fail_over(&topic);
        support::through_a_crash(label, broker, &topic, 600, Duration::ZERO, may_lose, crash).await;
    }
}
