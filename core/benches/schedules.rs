//! Many schedules, several schedulers: how late each tick is published
//! against its instant, and the CPU the schedulers use.
//!
//! ```sh
//! cargo bench -p pillarbox --bench schedules                      # sqlite:// only
//! cargo bench -p pillarbox --features redis --bench schedules     # and Redis
//! ```
//!
//! `PB_BENCH_SCHEDULES` (default 1,000) every-second schedules on one
//! topic; `PB_BENCH_SCHEDULERS` (default 3) schedulers, each on a
//! connection of its own, run for `PB_BENCH_SECONDS` (default 10). Then
//! every message is read back: its lateness is its publish time minus the
//! tick it was published for (`message.scheduled_for`), both from this
//! machine's clock. Ticks of the first two seconds (the schedulers
//! starting) are left out. CPU is this process's user and system time over
//! the run (for sqlite:// that includes the database's work; Redis's is
//! its own process). The goal: p99 under 100 ms.

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pillarbox::schedule::{Schedule, Scheduler, When};
use pillarbox::{Broker, Message, ReceiveRequest};

use common::env_number;

/// User plus system CPU time of this process, from /proc (Linux).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

async fn run(url: &str) {
    let schedules = env_number("PB_BENCH_SCHEDULES", 1000);
    let schedulers = env_number("PB_BENCH_SCHEDULERS", 3);
    let seconds = env_number("PB_BENCH_SECONDS", 10) as u64;
    let broker = match pillarbox::connect(url).await {
        Ok(b) => b,
        Err(e) => return println!("{url}: skipped ({e})"),
    };
    let topic = format!("bench-sched-{}", std::process::id());
    broker.ensure_group(&topic, "g").await.unwrap();
    let store = broker.schedule_store().expect("a backend that keeps schedules");
    let prefix = format!("bench-{}-", std::process::id());
    for n in 0..schedules {
        let when = When::Every { every_ms: 1000, anchor_ms: None };
        let schedule = Schedule::new(&format!("{prefix}{n}"), when, &topic, &Message::new("tick")).unwrap();
        store.upsert(&schedule).await.unwrap();
    }
    let mut running = Vec::new();
    for _ in 0..schedulers {
        let connection: Arc<dyn Broker> = pillarbox::connect(url).await.unwrap();
        let scheduler = Scheduler::for_broker(connection).unwrap();
        let runner = scheduler.clone();
        running.push((scheduler, tokio::spawn(async move { runner.run().await })));
    }
    let (cpu_before, began) = (cpu(), Instant::now());
    let started = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for (scheduler, _) in &running {
        scheduler.shutdown();
    }
    for (_, task) in running {
        task.await.unwrap().unwrap();
    }
    let (cpu_used, wall) = (cpu() - cpu_before, began.elapsed());
    // Read every message back.
    let mut late = Vec::new();
    loop {
        let request = ReceiveRequest {
            topic: &topic,
            group: "g",
            consumer: "reader",
            max: 1000,
            window: 1000,
            wait: Duration::from_millis(500),
            lease: Duration::from_secs(60),
        };
        let got = broker.receive(request).await.unwrap();
        if got.is_empty() {
            break;
        }
        for d in &got {
            let m = &d.message;
            let tick = m.scheduled_for.expect("a scheduled message");
            if tick >= started + Duration::from_secs(2) {
                late.push(m.published_at.duration_since(tick).unwrap_or_default());
            }
        }
        broker.ack(&got).await.unwrap();
    }
    for n in 0..schedules {
        store.remove(&format!("{prefix}{n}")).await.unwrap();
    }
    late.sort();
    let at = |q: f64| late.get(((late.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    println!(
        "{}: {schedules} schedules every second, {schedulers} schedulers, {seconds} s: {} ticks counted, \
         lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; CPU {:.0}% of a core ({:.2} s in {:.1} s)",
        broker.backend(),
        late.len(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        late.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        cpu_used.as_secs_f64() / wall.as_secs_f64() * 100.0,
        cpu_used.as_secs_f64(),
        wall.as_secs_f64(),
    );
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("pb-bench-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    run(&format!("sqlite://{}", dir.join("q.db").display())).await;
    #[cfg(feature = "redis")]
    run(&std::env::var("PILLARBOX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into())).await;
    let _ = std::fs::remove_dir_all(&dir);
}
