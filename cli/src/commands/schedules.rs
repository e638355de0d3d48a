//! `schedules` (list, pause, resume, run, remove) and `scheduler`: the
//! broker's periodic schedules, and a process that publishes their ticks.

use std::time::SystemTime;

use pillarbox::schedule::{Misfire, Scheduler, Stored, When};
use pillarbox::Broker;
use serde_json::json;

use crate::failure::{exit, Failure, Outcome};
use crate::output::{json as print_json, table, time};
use crate::ScheduleAction;

pub async fn run(broker: &dyn Broker, action: Option<ScheduleAction>, json: bool) -> Outcome {
    let store = broker
        .schedule_store()
        .ok_or(pillarbox::Error::Unsupported { backend: broker.backend(), capability: "schedules" })?;
    let (found, name) = match action {
        None | Some(ScheduleAction::List) => return list(store.list().await?, json),
        Some(ScheduleAction::Pause { name }) => (store.set_paused(&name, true).await?, name),
        Some(ScheduleAction::Resume { name }) => (store.set_paused(&name, false).await?, name),
        Some(ScheduleAction::Remove { name }) => (store.remove(&name).await?, name),
        Some(ScheduleAction::Run { name }) => match Scheduler::run_now(broker, &name).await? {
            Some(id) => {
                if json {
                    print_json(&json!({ "schedule": name, "message_id": id }))?;
                } else {
                    println!("{id}");
                }
                return Ok(exit::OK);
            }
            None => (false, name),
        },
    };
    if !found {
        return Err(Failure::NotFound(format!("there is no schedule `{name}`")));
    }
    Ok(exit::OK)
}

/// `cron 30 2 * * * (Europe/Berlin)` or `every 10s`.
fn when(w: &When) -> String {
    match w {
        When::Cron { expression, zone } => format!("cron {expression} ({zone})"),
        When::Every { every_ms, .. } => {
            format!("every {}", humantime::format_duration(std::time::Duration::from_millis(*every_ms)))
        }
    }
}

fn list(schedules: Vec<Stored>, json: bool) -> Outcome {
    let now = SystemTime::now();
    let ms = |t: Option<SystemTime>| t.map(pillarbox::message::to_millis);
    if json {
        let rows: Vec<_> = schedules
            .iter()
            .map(|s| {
                let (cron, zone, every_ms) = match &s.schedule.when {
                    When::Cron { expression, zone } => (Some(expression.clone()), Some(zone.clone()), None),
                    When::Every { every_ms, .. } => (None, None, Some(*every_ms)),
                };
                json!({
                    "name": s.schedule.name,
                    "topic": s.schedule.topic,
                    "cron": cron,
                    "zone": zone,
                    "every_ms": every_ms,
                    "misfire": s.schedule.misfire.name(),
                    "misfire_cap": match s.schedule.misfire { Misfire::All { cap } => Some(cap), _ => None },
                    "paused": s.paused,
                    "next_run_ms": ms(s.next_run(now)),
                    "last_run_ms": ms(s.last_tick),
                    "last_message_id": s.last_message_id,
                })
            })
            .collect();
        print_json(&rows)?;
        return Ok(exit::OK);
    }
    let mut t = table(&["NAME", "WHEN", "TOPIC", "NEXT RUN", "LAST RUN", "LAST MESSAGE", "PAUSED"]);
    for s in &schedules {
        t.add_row(vec![
            s.schedule.name.clone(),
            when(&s.schedule.when),
            s.schedule.topic.clone(),
            s.next_run(now).map(time).unwrap_or_else(|| "-".into()),
            s.last_tick.map(time).unwrap_or_else(|| "-".into()),
            s.last_message_id.clone().unwrap_or_else(|| "-".into()),
            if s.paused { "yes".into() } else { "no".into() },
        ]);
    }
    println!("{t}");
    Ok(exit::OK)
}

/// Publishes the ticks of the broker's schedules until Ctrl-C or SIGTERM.
pub async fn scheduler(broker: std::sync::Arc<dyn Broker>) -> Outcome {
    let scheduler = Scheduler::for_broker(broker)?;
    let runner = scheduler.clone();
    let run = tokio::spawn(async move { runner.run().await });
    eprintln!("publishing the ticks of every schedule of this broker; Ctrl-C or SIGTERM stops");
    stopped().await;
    scheduler.shutdown();
    run.await.map_err(|e| Failure::Io(e.to_string()))??;
    Ok(exit::OK)
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
