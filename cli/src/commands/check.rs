//! `check URL`: the conformance suite against a user's own deployment.

use std::time::Instant;

use pillarbox::conformance::{run_scenario, scenarios, Outcome as Verdict};
use serde_json::json;

use crate::failure::{exit, Outcome};

pub async fn run(url: &str, only: Option<&str>, json: bool) -> Outcome {
    // A bad URL or an unreachable broker is said once, not once per scenario.
    let broker = pillarbox::connect(url).await?;
    let _ = broker.close().await;
    if !json {
        println!("conformance suite against {}", pillarbox::url::redact(url));
    }
    quiet_scripted_panics();
    let (mut failed, mut results) = (0, Vec::new());
    for s in scenarios().into_iter().filter(|s| only.is_none_or(|o| s.name.contains(o))) {
        let started = Instant::now();
        let verdict = run_scenario(url, s.name).await;
        let seconds = started.elapsed().as_secs_f64();
        let (status, detail) = match verdict {
            Ok(Verdict::Passed) => ("pass", String::new()),
            Ok(Verdict::Skipped(why)) => ("skip", why),
            Err(why) => {
                failed += 1;
                ("FAIL", why.to_string())
            }
        };
        if json {
            results.push(
                json!({"scenario": s.name, "status": status.to_lowercase(), "seconds": seconds, "detail": detail}),
            );
        } else {
            println!("  {status:<4}  {:<42} {seconds:>6.2}s  {detail}", s.name);
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(results));
    } else if failed > 0 {
        println!("{failed} scenario(s) failed");
    } else {
        println!("all scenarios passed");
    }
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}

/// One scenario makes a handler panic on purpose ("handler bug") to show a
/// panic fails the attempt, not the worker: its report would read as a
/// crash. Other panics are reported as before.
fn quiet_scripted_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<String>().map(String::as_str);
        if message != Some("handler bug") {
            previous(info);
        }
    }));
}
