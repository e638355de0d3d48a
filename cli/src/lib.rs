//! The `pillarbox` command: what operators run against a queue, the same on
//! every backend, built on the core's inspection and dead-letter API.
//!
//! A library as well as a binary: the Python and Node packages call [`run`]
//! for their own `pillarbox` command, so there is one implementation.

mod commands;
mod failure;
mod filter;
mod output;

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use failure::{exit, Failure};

/// One command for Redis, RabbitMQ, Kafka and the embedded backends:
/// inspect groups and lag, list, redrive and purge dead letters, publish,
/// watch a group, check a deployment, serve Prometheus metrics.
#[derive(Parser, Debug)]
#[command(name = "pillarbox", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// The broker (credentials are never printed).
    #[arg(long, env = "PILLARBOX_URL", global = true, hide_env_values = true)]
    url: Option<String>,
    /// JSON on standard output instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit status: 0 done; 1 failed (a scenario, a scrape); 2 bad usage, URL or option; \
                          3 broker unreachable; 4 no such topic, group or dead letter; 5 refused (purge not confirmed).";

#[derive(Subcommand, Debug)]
enum Command {
    /// The groups of a topic.
    Groups { topic: String },
    /// Ready, in flight, waiting, dead letters and oldest age, per group.
    Inspect {
        topic: String,
        /// One group (default: every group of the topic).
        group: Option<String>,
    },
    /// Per partition: the group's committed offset, the log end offset and the lag.
    Lag { topic: String, group: String },
    /// The live consumers of a group: what each holds, since when, its partitions.
    Consumers { topic: String, group: String },
    /// List, show, redrive or purge a group's dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetters),
    /// Publish messages: the payload from an argument, a file or standard input.
    Publish(Publish),
    /// A group's figures, refreshed every second with the rates in and out, until Ctrl-C.
    Watch {
        topic: String,
        group: String,
        /// Time between refreshes.
        #[arg(long, default_value = "1s", value_parser = duration)]
        interval: Duration,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Run the conformance suite against a deployment: a pass/fail line per scenario.
    Check {
        /// The deployment (default: --url or PILLARBOX_URL). Scenarios use topics of their own.
        check_url: Option<String>,
        /// Only the scenarios whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// The broker's periodic schedules: list (the default), pause, resume or remove one.
    Schedules {
        #[command(subcommand)]
        action: Option<ScheduleAction>,
    },
    /// Publish the ticks of the broker's schedules until Ctrl-C or SIGTERM
    /// (each tick once, however many schedulers run).
    Scheduler,
    /// Serve Prometheus metrics for TOPIC:GROUP pairs, read from the broker at each scrape.
    Metrics {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:9187")]
        listen: String,
        /// The groups to report, as TOPIC:GROUP.
        #[arg(required = true, value_parser = topic_group)]
        groups: Vec<(String, String)>,
    },
}

#[derive(Subcommand, Debug)]
enum ScheduleAction {
    /// Each schedule: when it fires, its topic, next and last run, whether paused.
    List,
    /// Pause a schedule: its ticks are skipped until it is resumed.
    Pause { name: String },
    /// Resume a schedule (ticks missed while it was paused are not published).
    Resume { name: String },
    /// Publish a schedule's message now, outside its timetable (its next
    /// tick comes as planned); prints the message id.
    Run { name: String },
    /// Remove a schedule.
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
enum DeadLetters {
    /// The dead letters of a group with their reason, oldest first.
    List {
        topic: String,
        group: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// One dead letter: its reason, headers and payload (as text when it is UTF-8).
    Show {
        topic: String,
        group: String,
        /// The dead letter's id or its message's id.
        id: String,
    },
    /// Send dead letters back to their group as fresh messages.
    Redrive {
        topic: String,
        group: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many a second (`50` or `50/s`).
        #[arg(long, value_parser = rate)]
        rate: Option<f64>,
        /// Stop after this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Count what would be redriven; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters (asks for confirmation on a terminal).
    Purge {
        topic: String,
        group: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// Do not ask: needed when standard input is not a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Which dead letters: every `--filter` must match.
#[derive(Args, Debug, Default)]
struct FilterArgs {
    /// `kind=ValueError`, `cause=retries_exhausted`, `contains=TEXT` (in the
    /// error message), `id=MESSAGE_ID` (repeatable), `before=2026-01-01T00:00:00Z`
    /// or `before=1h` (dead-lettered at least that long ago).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
}

#[derive(Args, Debug)]
struct Publish {
    topic: String,
    /// The payload (else --file, else standard input).
    payload: Option<String>,
    /// Read the payload from this file (`-`: standard input).
    #[arg(long, conflicts_with = "payload")]
    file: Option<String>,
    /// One message per line of the input.
    #[arg(long)]
    lines: bool,
    /// Ordering key.
    #[arg(long)]
    key: Option<String>,
    /// Idempotency key: handled at most once per group within the retention.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Not delivered before this long from now (`10s`, `5m`).
    #[arg(long, value_parser = duration)]
    delay: Option<Duration>,
    /// A header, `name=value` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = header)]
    headers: Vec<(String, String)>,
    /// The payload's content type.
    #[arg(long)]
    content_type: Option<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration such as 10s or 5m: {e}"))
}

fn rate(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a rate such as 50 or 50/s")),
    }
}

fn header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not a header: write NAME=VALUE")),
    }
}

fn topic_group(s: &str) -> Result<(String, String), String> {
    match s.rsplit_once(':') {
        Some((t, g)) if !t.is_empty() && !g.is_empty() => Ok((t.to_string(), g.to_string())),
        _ => Err(format!("`{s}` is not TOPIC:GROUP")),
    }
}

/// Runs the command line `args` (the program name first); returns the exit status.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit::USAGE } else { exit::OK };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return exit::FAILED;
        }
    };
    let outcome = runtime.block_on(commands::run(cli));
    // Nothing left running may hold the process (a consumer's background task).
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(status) => status,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit_status()
        }
    }
}
