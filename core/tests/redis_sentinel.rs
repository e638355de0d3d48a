//! Redis Sentinel (tests/brokers/start-redis-sentinel.sh: a primary, a
//! replica, three sentinels naming it `pillarbox`): the primary killed with
//! SIGKILL mid-stream, without and with `wait_replicas=1`. The sentinels
//! promote the replica; the backend asks them for the new primary when the
//! old one stops answering. Redis replicates asynchronously, so without WAIT
//! the run measures what a failover loses; with WAIT nothing confirmed may
//! be lost. (The conformance suite runs through Sentinel too.)
#![cfg(feature = "redis")]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pillarbox::connect;

const SENTINEL: u16 = 27201;

fn url() -> String {
    std::env::var("PILLARBOX_REDIS_SENTINEL_URL").unwrap_or_else(|_| {
        format!("redis+sentinel://127.0.0.1:{SENTINEL},127.0.0.1:{},127.0.0.1:{}/pillarbox", SENTINEL + 1, SENTINEL + 2)
    })
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The port of the primary the sentinels name now.
fn primary() -> Option<u16> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &SENTINEL.to_string(), "sentinel", "get-master-addr-by-name", "pillarbox"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().nth(1)?.trim().parse().ok()
}

/// Kills the primary with SIGKILL, waits until the sentinels name another,
/// then starts the dead node again (it rejoins as a replica).
fn fail_over() {
    let victim = primary().expect("the sentinels name a primary");
    let pidfile = repo().join(format!(".pillarbox-test/redis-sentinel/{victim}/redis.pid"));
    let pid = std::fs::read_to_string(&pidfile).expect("the primary's pid file").trim().to_string();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while primary().is_none_or(|p| p == victim) {
        assert!(Instant::now() < deadline, "the sentinels named no new primary within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let restarted = Command::new("bash").arg(repo().join("tests/brokers/start-redis-sentinel.sh")).output().unwrap();
    assert!(restarted.status.success(), "{}", String::from_utf8_lossy(&restarted.stderr));
}

/// Both runs in one test: they kill nodes of the same setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_killed_mid_stream_without_and_with_wait() {
    for (label, options, may_lose) in [
        ("Redis Sentinel, the primary SIGKILLed (asynchronous replication)", "", true),
        ("Redis Sentinel, the primary SIGKILLed, wait_replicas=1", "?wait_replicas=1&wait_timeout_ms=2000", false),
    ] {
        let broker = connect(&format!("{}{options}", url())).await.unwrap();
        let topic = format!("failover-{}", fastrand::u32(..));
        support::through_a_crash(label, broker, &topic, 600, Duration::ZERO, may_lose, fail_over).await;
    }
}
