//! The embedded backends, `memory://[NAME]` and `sqlite://PATH`: one
//! implementation on SQLite, in memory or in a file.
//!
//! - `memory://` is private to the handle; `memory://NAME` is shared by every
//!   handle in the process that opens the same name.
//! - `sqlite://PATH` is durable and shared safely by several processes on
//!   one machine (WAL mode; each primitive is one transaction).
//!
//! Options (URL query): `max_message_bytes` (default 1 MiB), `poll_ms`
//! (how often an idle consumer looks for work published by other processes,
//! default 50; a fallback: on Linux and macOS they wake it at once, see
//! `wake`), `busy_timeout_ms` (default 10000), `synchronous` (`full`,
//! the default: a publish survives power loss; `normal`: survives a crash of
//! the process).

mod broker;
mod db;
mod idempotency;
mod schedules;
mod wake;

pub use broker::EmbeddedBroker;
pub use idempotency::SqliteIdempotencyStore;
pub use schedules::SqliteScheduleStore;
