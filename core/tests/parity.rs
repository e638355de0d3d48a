//! The Rust core's public surface against tests/parity/surface.json, the
//! description every language is checked against (the Python and Node
//! packages have the same test): every option of the others is here, with
//! the same default.

use std::time::Duration;

use pillarbox::tasks::{Apply, TaskOptions, DEFAULT_GROUP, DEFAULT_TOPIC};
use pillarbox::{Error, GroupStats, Message, RetryPolicy, WorkerOptions, WorkerStats};
use serde_json::Value;

fn surface() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/parity/surface.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("tests/parity/surface.json")).expect("JSON")
}

/// The options of `call` that Rust has, with their specs.
fn expected(surface: &Value, call: &str) -> Vec<(String, Value)> {
    let mut options: Vec<(String, Value)> = surface["calls"][call]
        .as_object()
        .expect("a call")
        .iter()
        .filter(|(_, spec)| spec["languages"].as_array().is_none_or(|l| l.iter().any(|l| l == "rust")))
        .map(|(name, spec)| (name.clone(), spec.clone()))
        .collect();
    options.sort_by(|a, b| a.0.cmp(&b.0));
    options
}

fn names(options: &[(String, Value)]) -> Vec<String> {
    options.iter().map(|(name, _)| name.clone()).collect()
}

/// The top-level field names of a struct's `Debug` output.
fn fields(debug: &str) -> Vec<String> {
    let body = &debug[debug.find('{').expect("a struct") + 1..debug.rfind('}').expect("a struct")];
    let (mut depth, mut start, mut found) = (0i32, 0usize, Vec::new());
    for (at, c) in body.char_indices().chain([(body.len(), ',')]) {
        match c {
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                let part = body[start..at].trim();
                if let Some((name, _)) = part.split_once(':') {
                    found.push(name.trim().to_string());
                }
                start = at + 1;
            }
            _ => {}
        }
    }
    found.sort();
    found
}

fn seconds(spec: &Value) -> Option<Duration> {
    spec["default"].as_f64().map(Duration::from_secs_f64)
}

#[test]
fn worker_options_and_their_defaults() {
    let surface = surface();
    let want = expected(&surface, "worker");
    let defaults = WorkerOptions::default();
    assert_eq!(fields(&format!("{defaults:?}")), names(&want));
    for (name, spec) in &want {
        let (found, default): (String, String) = match name.as_str() {
            "concurrency" => {
                assert_eq!(Value::from(pillarbox::MAX_CONCURRENCY), spec["max"], "worker.concurrency's largest");
                (defaults.concurrency.to_string(), spec["default"].to_string())
            }
            "prefetch" => (format!("{:?}", defaults.prefetch), format!("{:?}", spec["default"].as_u64())),
            "handler_timeout" => (format!("{:?}", defaults.handler_timeout), format!("{:?}", seconds(spec))),
            "lease" => (format!("{:?}", defaults.lease), format!("{:?}", seconds(spec).unwrap())),
            "poll_wait" => (format!("{:?}", defaults.poll_wait), format!("{:?}", seconds(spec).unwrap())),
            "shutdown_grace" => (format!("{:?}", defaults.shutdown_grace), format!("{:?}", seconds(spec).unwrap())),
            "idempotency_retention" => {
                (format!("{:?}", defaults.idempotency_retention), format!("{:?}", seconds(spec).unwrap()))
            }
            "busy_key_delay" => (format!("{:?}", defaults.busy_key_delay), format!("{:?}", seconds(spec).unwrap())),
            "idempotency_store" => (defaults.idempotency_store.is_some().to_string(), "false".into()),
            "consumer_name" => (format!("{:?}", defaults.consumer_name), "None".into()),
            "retry" => continue,
            other => panic!("the surface has a worker option {other} this test does not know"),
        };
        assert_eq!(found, default, "worker.{name}");
    }
}

#[test]
fn retry_policy_and_its_defaults() {
    let surface = surface();
    let want = expected(&surface, "retry");
    let policy = RetryPolicy::default();
    assert_eq!(fields(&format!("{policy:?}")), names(&want));
    let spec = |name: &str| want.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(Value::from(policy.max_retries), spec("max_retries")["default"]);
    assert_eq!(Some(policy.initial_delay), seconds(&spec("initial_delay")));
    assert_eq!(Value::from(policy.multiplier), spec("multiplier")["default"]);
    assert_eq!(Some(policy.max_delay), seconds(&spec("max_delay")));
    assert_eq!(Value::from(policy.jitter), spec("jitter")["default"]);
}

#[test]
fn publish_options_are_message_fields() {
    let surface = surface();
    let message = fields(&format!("{:?}", Message::new("x")));
    for name in names(&expected(&surface, "publish")) {
        // A delay is `with_delay`, kept as the time it ends.
        let field = if name == "delay" { "deliver_at".to_string() } else { name };
        assert!(message.contains(&field), "Message has no {field}: {message:?}");
    }
}

#[test]
fn task_layer_options() {
    let surface = surface();
    assert_eq!(fields(&format!("{:?}", TaskOptions::default())), names(&expected(&surface, "task")));
    let mut apply = fields(&format!("{:?}", Apply::default()));
    apply.retain(|f| f != "args");
    assert_eq!(apply, names(&expected(&surface, "apply_async")));
    let app = &surface["calls"]["app"];
    assert_eq!(
        (DEFAULT_GROUP, DEFAULT_TOPIC),
        (app["group"]["default"].as_str().unwrap(), app["default_topic"]["default"].as_str().unwrap())
    );
}

#[test]
fn error_codes_and_records() {
    let surface = surface();
    let all = [
        Error::InvalidUrl { url: String::new(), reason: String::new() },
        Error::UnknownScheme { scheme: String::new() },
        Error::BackendNotEnabled { scheme: String::new(), feature: "x" },
        Error::InvalidOption { name: String::new(), reason: String::new() },
        Error::Unsupported { backend: "x", capability: "y" },
        Error::MessageTooLarge { size: 2, limit: 1 },
        Error::QueueFull { topic: String::new(), limit: 1 },
        Error::InvalidMessage(String::new()),
        Error::Connect { backend: "x", url: String::new(), reason: String::new() },
        Error::Backend { backend: "x", reason: String::new() },
        Error::Timeout { operation: "x", after: Duration::ZERO },
        Error::LeaseLost { message_id: None, count: 1 },
        Error::Closed,
        Error::AlreadyRunning,
    ];
    let codes: Vec<Value> = all.iter().map(|e| Value::from(e.code())).collect();
    assert_eq!(Value::from(codes), surface["error_codes"]);
    let keys = |v: Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        Value::from(k)
    };
    let sorted = |v: &Value| {
        let mut k: Vec<String> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        k.sort();
        Value::from(k)
    };
    assert_eq!(keys(serde_json::to_value(WorkerStats::default()).unwrap()), sorted(&surface["worker_stats"]));
    assert_eq!(keys(serde_json::to_value(GroupStats::default()).unwrap()), sorted(&surface["group_stats"]));
}

/// The counts the surface bounds are refused past their bounds here too
/// (the bindings refuse negative numbers and wrong types before the core).
#[tokio::test]
async fn counts_out_of_their_range_are_invalid_options() {
    let surface = surface();
    let concurrency = &surface["calls"]["worker"]["concurrency"];
    let broker = pillarbox::connect("memory://").await.unwrap();
    for n in [concurrency["min"].as_u64().unwrap() - 1, concurrency["max"].as_u64().unwrap() + 1] {
        let options = WorkerOptions::default().concurrency(n as usize);
        let handler = |_job: pillarbox::Job| async { Ok::<(), pillarbox::HandlerError>(()) };
        let refused = pillarbox::Worker::new(std::sync::Arc::clone(&broker), "t", "g", handler, options).unwrap_err();
        assert_eq!(refused.code(), "INVALID_OPTION");
        assert!(refused.to_string().contains("`concurrency`"), "{refused}");
    }
}

/// The manifest the packages read their defaults from
/// (`pillarbox::surface::defaults`) says what surface.json says.
#[test]
fn the_defaults_manifest_is_the_surfaces() {
    use pillarbox::surface::{defaults, DefaultValue};
    let surface = surface();
    for (call, options) in defaults() {
        for (name, value) in options {
            let spec = &surface["calls"][call][name];
            assert!(spec.is_object(), "surface.json lacks {call}.{name}");
            let want = match value {
                DefaultValue::Count(n) => Value::from(n),
                DefaultValue::Duration(d) => d.map_or(Value::Null, |d| Value::from(d.as_secs_f64())),
                DefaultValue::Number(n) => Value::from(n),
                DefaultValue::Text(text) => Value::from(text),
                DefaultValue::Unset => Value::Null,
            };
            let found = &spec["default"];
            let same = match (found.as_f64(), want.as_f64()) {
                (Some(a), Some(b)) => a == b,
                _ => *found == want,
            };
            assert!(same, "{call}.{name}: surface.json says {found}, the core {want}");
        }
    }
}
