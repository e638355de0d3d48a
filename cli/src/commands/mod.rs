//! One module per family of commands; this one connects and dispatches.

mod check;
mod dead_letters;
mod inspect;
mod metrics;
mod publish;
mod schedules;
mod watch;

use std::sync::Arc;

use pillarbox::Broker;

use crate::failure::{Failure, Outcome};
use crate::{Cli, Command};

pub async fn run(cli: Cli) -> Outcome {
    let json = cli.json;
    if let Command::Check { check_url, only } = &cli.command {
        let url = check_url.clone().or(cli.url.clone()).ok_or_else(no_url)?;
        return check::run(&url, only.as_deref(), json).await;
    }
    let url = cli.url.ok_or_else(no_url)?;
    let broker = pillarbox::connect(&url).await?;
    let outcome = match cli.command {
        Command::Groups { topic } => inspect::groups(&*broker, &topic, json).await,
        Command::Inspect { topic, group } => inspect::inspect(&*broker, &topic, group.as_deref(), json).await,
        Command::Lag { topic, group } => inspect::lag(&*broker, &topic, &group, json).await,
        Command::Consumers { topic, group } => inspect::consumers(&*broker, &topic, &group, json).await,
        Command::DeadLetters(command) => dead_letters::run(&*broker, command, json).await,
        Command::Publish(args) => publish::run(&*broker, args, json).await,
        Command::Watch { topic, group, interval, count } => {
            watch::run(&*broker, &topic, &group, interval, count, json).await
        }
        Command::Metrics { listen, groups } => metrics::serve(Arc::clone(&broker), &listen, groups).await,
        Command::Schedules { action } => schedules::run(&*broker, action, json).await,
        Command::Scheduler => schedules::scheduler(Arc::clone(&broker)).await,
        Command::Check { .. } => unreachable!("handled above"),
    };
    let _ = broker.close().await;
    outcome
}

fn no_url() -> Failure {
    Failure::Usage("no broker URL: pass --url or set PILLARBOX_URL (e.g. redis://127.0.0.1:6379)".into())
}

/// Checks that `group` exists on `topic`: a typo is an error that names what exists.
pub async fn known_group(broker: &dyn Broker, topic: &str, group: &str) -> Outcome<()> {
    let groups = broker.groups(topic).await?;
    if groups.iter().any(|g| g == group) {
        return Ok(());
    }
    Err(unknown_group(topic, group, &groups))
}

fn unknown_group(topic: &str, group: &str, groups: &[String]) -> Failure {
    if groups.is_empty() {
        Failure::NotFound(format!("topic `{topic}` has no groups: no such topic, or no worker has subscribed to it"))
    } else {
        Failure::NotFound(format!("no group `{group}` on topic `{topic}` (its groups: {})", groups.join(", ")))
    }
}
