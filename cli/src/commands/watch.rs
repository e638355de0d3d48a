//! `watch TOPIC GROUP`: the figures refreshed, with rates, until Ctrl-C.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use pillarbox::{Broker, GroupStats};
use serde_json::json;

use super::inspect::stats_json;
use super::known_group;
use crate::failure::{exit, Outcome};
use crate::output::{age, align_right, number, table};

pub async fn run(
    broker: &dyn Broker,
    topic: &str,
    group: &str,
    interval: Duration,
    count: Option<u64>,
    json: bool,
) -> Outcome {
    known_group(broker, topic, group).await?;
    let terminal = std::io::stdout().is_terminal() && !json;
    let mut previous: Option<(Instant, GroupStats)> = None;
    let mut shown = 0u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let now = Instant::now();
        let s = broker.inspect(topic, group).await?;
        let rates = previous.as_ref().map(|(at, before)| Rates::between(before, &s, now - *at));
        if json {
            let mut v = stats_json(&s);
            v["rates"] = rates.as_ref().map(Rates::to_json).unwrap_or(serde_json::Value::Null);
            println!("{v}");
        } else {
            render(&s, rates.as_ref(), terminal);
        }
        previous = Some((now, s));
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(exit::OK);
        }
        tokio::select! {
            _ = &mut stop => return Ok(exit::OK),
            _ = tokio::time::sleep_until((now + interval).into()) => {}
        }
    }
}

/// Messages a second. Partitioned backends count what arrived and what the
/// group committed; the others only see their backlog grow or shrink.
struct Rates {
    arrived: Option<f64>,
    done: Option<f64>,
    backlog: f64,
}

impl Rates {
    fn between(before: &GroupStats, after: &GroupStats, elapsed: Duration) -> Rates {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let backlog = |s: &GroupStats| (s.ready + s.in_flight.unwrap_or(0) + s.waiting) as f64;
        let sum = |s: &GroupStats, f: fn(&pillarbox::PartitionLag) -> i64| -> i64 { s.partitions.iter().map(f).sum() };
        let partitioned = !before.partitions.is_empty() && !after.partitions.is_empty();
        Rates {
            arrived: partitioned.then(|| (sum(after, |p| p.end) - sum(before, |p| p.end)) as f64 / secs),
            done: partitioned.then(|| {
                let committed = |p: &pillarbox::PartitionLag| p.committed.unwrap_or(0);
                (sum(after, committed) - sum(before, committed)) as f64 / secs
            }),
            backlog: (backlog(after) - backlog(before)) / secs,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({"in_per_second": self.arrived, "out_per_second": self.done, "backlog_per_second": self.backlog})
    }
}

fn render(s: &GroupStats, rates: Option<&Rates>, terminal: bool) {
    let rate = |r: Option<f64>| r.map(|r| format!("{r:.1}/s")).unwrap_or_else(|| "-".into());
    let mut t = table(&["READY", "IN FLIGHT", "WAITING", "DEAD LETTERS", "OLDEST", "IN", "OUT", "BACKLOG"]);
    t.add_row(vec![
        s.ready.to_string(),
        number(s.in_flight),
        s.waiting.to_string(),
        s.dead_letters.to_string(),
        age(s.oldest_age),
        rate(rates.and_then(|r| r.arrived)),
        rate(rates.and_then(|r| r.done)),
        rates.map(|r| format!("{:+.1}/s", r.backlog)).unwrap_or_else(|| "-".into()),
    ]);
    align_right(&mut t, &[0, 1, 2, 3, 4, 5, 6, 7]);
    if terminal {
        // Clear the screen and home the cursor: one table, refreshed in place.
        print!("\x1b[2J\x1b[H");
        println!("{} / {}   (Ctrl-C to stop)\n{t}", s.topic, s.group);
    } else {
        println!("{t}");
    }
}
