//! Checks a broker deployment against the conformance suite.
//!
//! ```sh
//! cargo run -p pillarbox --features conformance --example conformance -- sqlite:///tmp/check.db
//! ```
//!
//! Every scenario uses topics of its own (`conf.<scenario>.<random>`).
//! Exits with status 1 if any scenario fails.

use pillarbox::conformance::{run_scenario, scenarios, Outcome};

#[tokio::main]
async fn main() {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: conformance URL   (e.g. memory://check, sqlite:///tmp/check.db)");
        std::process::exit(2);
    };
    let display = pillarbox::url::redact(&url);
    println!("conformance suite against {display}");
    let mut failed = 0;
    for s in scenarios() {
        let started = std::time::Instant::now();
        match run_scenario(&url, s.name).await {
            Ok(Outcome::Passed) => println!("  pass  {:<42} {:>6.2}s", s.name, started.elapsed().as_secs_f64()),
            Ok(Outcome::Skipped(why)) => println!("  skip  {:<42} {why}", s.name),
            Err(why) => {
                failed += 1;
                println!("  FAIL  {:<42} {why}", s.name);
            }
        }
    }
    if failed > 0 {
        println!("{failed} scenario(s) failed");
        std::process::exit(1);
    }
    println!("all scenarios passed");
}
