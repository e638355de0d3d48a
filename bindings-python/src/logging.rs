//! The core's log events in Python's `logging`, under the `pillarbox`
//! logger, so Django's or any application's logging configuration applies.
//!
//! Events are formatted where they happen and handed to one thread that
//! takes the GIL to log them: the runtime's threads never wait for the GIL.
//! Events at INFO and above are forwarded (`PILLARBOX_LOG=debug` for more);
//! the logger's own level then filters as usual.

use std::sync::mpsc;
use std::sync::Mutex;

use pyo3::prelude::*;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

struct Record {
    level: u8,
    text: String,
}

/// The forwarding thread of this process (made again after a fork).
static FORWARDER: Mutex<Option<(u32, mpsc::Sender<Record>)>> = Mutex::new(None);

fn send(record: Record) {
    let pid = std::process::id();
    let mut slot = FORWARDER.lock().unwrap_or_else(|e| e.into_inner());
    if !matches!(&*slot, Some((owner, _)) if *owner == pid) {
        let (tx, rx) = mpsc::channel::<Record>();
        let spawned = std::thread::Builder::new().name("pillarbox-logging".into()).spawn(move || {
            for record in rx {
                // Not once the interpreter is finalizing.
                let logged = Python::try_attach(|py| -> PyResult<()> {
                    let logger = py.import("logging")?.call_method1("getLogger", ("pillarbox",))?;
                    logger.call_method1("log", (record.level, "%s", record.text))?;
                    Ok(())
                });
                if logged.is_none() {
                    break;
                }
            }
        });
        if spawned.is_err() {
            return;
        }
        *slot = Some((pid, tx));
    }
    if let Some((_, tx)) = &*slot {
        let _ = tx.send(record);
    }
}

/// Python's level numbers.
fn python_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

struct ToPython;

impl<S: Subscriber> Layer<S> for ToPython {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        send(Record { level: python_level(event.metadata().level()), text: pillarbox::logs::text(event) });
    }
}

/// Sends the core's events to Python's logging (unless the process already
/// has a tracing subscriber of its own).
pub fn install() {
    let filter = EnvFilter::try_from_env("PILLARBOX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry().with(ToPython.with_filter(filter)).try_init();
}
