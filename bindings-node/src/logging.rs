//! The core's log events for a logger the application chooses
//! (`setLogger` in the facade; warnings and errors on the console by
//! default). Events are formatted where they happen and queued to the
//! JavaScript thread without waiting; the logger never keeps Node alive.

use std::sync::Mutex;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// One event of the core.
#[napi(object)]
pub struct LogRecord {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    pub message: String,
}

type JsLogger = ThreadsafeFunction<LogRecord, (), LogRecord, Status, false, true>;

/// The logger and the most detailed level it wants.
static LOGGER: Mutex<Option<(JsLogger, Level)>> = Mutex::new(None);

/// Sends the core's events at `level` and above (`info` by default) to
/// `logger`, or nowhere with `null`.
#[napi]
pub fn set_logger(logger: Option<JsLogger>, level: Option<String>) -> napi::Result<()> {
    let level = match level.as_deref().unwrap_or("info") {
        "error" => Level::ERROR,
        "warn" => Level::WARN,
        "info" => Level::INFO,
        "debug" => Level::DEBUG,
        "trace" => Level::TRACE,
        other => {
            return Err(crate::errors::invalid_option(
                "level",
                format!("must be one of error, warn, info, debug, trace, not `{other}`"),
            ))
        }
    };
    // Once per process; an application with a tracing subscriber of its own keeps it.
    let _ = tracing_subscriber::registry().with(ToJavaScript).try_init();
    *LOGGER.lock().unwrap_or_else(|e| e.into_inner()) = logger.map(|l| (l, level));
    Ok(())
}

struct ToJavaScript;

impl<S: Subscriber> Layer<S> for ToJavaScript {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        let logger = LOGGER.lock().unwrap_or_else(|e| e.into_inner());
        let Some((logger, wanted)) = logger.as_ref() else { return };
        if level > *wanted {
            return;
        }
        let record = LogRecord { level: level.as_str().to_ascii_lowercase(), message: pillarbox::logs::text(event) };
        let _ = logger.call(record, ThreadsafeFunctionCallMode::NonBlocking);
    }
}
