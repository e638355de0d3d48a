//! Runs the conformance suite against the embedded backends (always) and
//! against `PILLARBOX_CONFORMANCE_URL` when it is set.
//!
//! Each scenario is its own test, per backend, so a failure names both.

use pillarbox::conformance::{run_scenario, scenarios, Outcome};

async fn check(url: &str, scenario: &str) {
    match run_scenario(url, scenario).await {
        Ok(Outcome::Passed) => {}
        // Every backend here runs every scenario: a skip would pass
        // unseen (libtest cannot mark a test ignored once it runs), so it
        // fails instead, saying why.
        Ok(Outcome::Skipped(why)) => panic!("{scenario} was skipped on {url} ({why}), not run"),
        Err(failure) => panic!("{scenario} failed on {url}: {failure}"),
    }
}

fn memory_url() -> String {
    // A named memory database, so a scenario's second connection shares it.
    format!("memory://conformance-{}", uuid_like())
}

fn sqlite_url() -> String {
    let dir = std::env::temp_dir().join("pillarbox-conformance");
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}/{}.db?synchronous=normal", dir.display(), uuid_like())
}

fn uuid_like() -> String {
    format!(
        "{:016x}{:08x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        std::process::id()
    ) + &format!("{:04x}", rand_u16())
}

fn rand_u16() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[allow(dead_code)]
fn redis_url() -> String {
    // Started by tests/brokers/start-redis.sh.
    std::env::var("PILLARBOX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into())
}

#[allow(dead_code)]
#[cfg(feature = "redis")]
fn redis_cluster_url() -> String {
    // tests/brokers/start-redis-cluster.sh: three primaries, three replicas.
    std::env::var("PILLARBOX_REDIS_CLUSTER_URL")
        .unwrap_or_else(|_| "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103".into())
}

#[cfg(feature = "redis")]
fn redis_sentinel_url() -> String {
    // tests/brokers/start-redis-sentinel.sh: a primary, a replica, three sentinels.
    std::env::var("PILLARBOX_REDIS_SENTINEL_URL")
        .unwrap_or_else(|_| "redis+sentinel://127.0.0.1:27201,127.0.0.1:27202,127.0.0.1:27203/pillarbox".into())
}

#[cfg(feature = "amqp")]
fn amqp_url() -> String {
    // Started by tests/brokers/start-rabbitmq.sh (management on 15673,
    // figures refreshed every 100 ms).
    std::env::var("PILLARBOX_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000".into())
}

#[allow(dead_code)]
fn kafka_url() -> String {
    // Started by tests/brokers/start-kafka.sh.
    std::env::var("PILLARBOX_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:19092".into())
}

macro_rules! backend {
    ($module:ident, $url:expr, [$($scenario:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::check(&$url, stringify!($scenario)).await;
                }
            )*

            #[test]
            fn every_scenario_has_a_test() {
                let listed = [$(stringify!($scenario)),*];
                let all: Vec<_> = pillarbox::conformance::scenarios().into_iter().map(|s| s.name).collect();
                assert_eq!(listed.to_vec(), all, "the test list and the suite differ");
            }
        }
    };
}

macro_rules! every_backend {
    ($($scenario:ident),* $(,)?) => {
        backend!(memory, super::memory_url(), [$($scenario),*]);
        backend!(sqlite, super::sqlite_url(), [$($scenario),*]);
        #[cfg(feature = "redis")]
        backend!(redis, super::redis_url(), [$($scenario),*]);
        #[cfg(feature = "redis")]
        backend!(redis_cluster, super::redis_cluster_url(), [$($scenario),*]);
        #[cfg(feature = "redis")]
        backend!(redis_sentinel, super::redis_sentinel_url(), [$($scenario),*]);
        #[cfg(feature = "amqp")]
        backend!(amqp, super::amqp_url(), [$($scenario),*]);
        #[cfg(feature = "kafka")]
        backend!(kafka, super::kafka_url(), [$($scenario),*]);
    };
}

every_backend!(
    round_trip_with_all_metadata,
    fan_out_to_two_groups,
    competing_consumers_handle_each_once,
    retry_then_success,
    retries_exhausted_dead_letter,
    not_retryable_dead_letters_at_once,
    panic_and_timeout_are_failures,
    redrive_and_purge,
    idempotency_same_key_published_twice,
    idempotency_redelivery_after_done,
    idempotency_race_runs_once,
    consumer_dropped_mid_message,
    crash_loop_dead_lettered,
    slow_handler_lease_renewed,
    delayed_publish_not_early,
    per_key_ordering,
    inspection_figures,
    foreign_message_consumed,
    malformed_metadata_dead_lettered,
    oversized_message_rejected,
    bad_names_refused,
    graceful_shutdown_loses_nothing,
    worker_stopping_leaves_its_neighbour_alone,
    schedule_claims_exclusive_and_current,
    schedule_ticks_published_once,
);

/// The whole suite against a URL of your own, e.g.
/// `PILLARBOX_CONFORMANCE_URL=sqlite:///tmp/x.db cargo test -p pillarbox --features conformance --test conformance user_url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_url() {
    let Ok(url) = std::env::var("PILLARBOX_CONFORMANCE_URL") else { return };
    let mut failures = Vec::new();
    for s in scenarios() {
        match run_scenario(&url, s.name).await {
            Ok(Outcome::Passed) => eprintln!("passed  {}", s.name),
            Ok(Outcome::Skipped(why)) => eprintln!("skipped {}: {why}", s.name),
            Err(f) => {
                eprintln!("FAILED  {}: {f}", s.name);
                failures.push(s.name);
            }
        }
    }
    assert!(failures.is_empty(), "failed on {url}: {failures:?}");
}
