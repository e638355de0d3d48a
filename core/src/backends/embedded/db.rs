//! The embedded database: one SQLite connection per process and file (or
//! per in-memory name), its schema, and how async code calls into it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::url::BrokerUrl;

use super::wake::{WaitingFor, Wake};

pub(crate) const BACKEND_SQLITE: &str = "sqlite";
pub(crate) const BACKEND_MEMORY: &str = "memory";

/// Bumped when the schema changes incompatibly.
const SCHEMA_VERSION: i64 = 1;

/// Tables:
/// - `pb_log`: every published message of a topic, until every group of
///   the topic has copied it (a group created later starts from what is
///   still here: "earliest retained").
/// - `pb_groups`: each group's cursor into the log.
/// - `pb_entries`: a group's own copy of each message it has not finished:
///   ready (no lease, due), waiting (no lease, due later), or in flight
///   (`lease` set, `due_at` = when the lease expires, after which it is
///   received again and the delivery counts as a new attempt).
/// - `pb_dead`: dead letters, per group.
/// - `pb_idempotency`: the idempotency store.
///
/// Headers are a JSON object of wire names (see `crate::wire`), so the
/// database is readable with the plain `sqlite3` tool.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pb_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT    NOT NULL,
    headers      TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    published_at INTEGER NOT NULL,
    due_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pb_log_topic ON pb_log (topic, seq);
CREATE TABLE IF NOT EXISTS pb_groups (
    topic      TEXT    NOT NULL,
    grp        TEXT    NOT NULL,
    cursor     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (topic, grp)
);
CREATE TABLE IF NOT EXISTS pb_entries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT    NOT NULL,
    grp          TEXT    NOT NULL,
    headers      TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    published_at INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    deliveries   INTEGER NOT NULL DEFAULT 0,
    lease        INTEGER,
    consumer     TEXT,
    leased_at    INTEGER
);
CREATE INDEX IF NOT EXISTS pb_entries_due ON pb_entries (topic, grp, due_at, id);
CREATE TABLE IF NOT EXISTS pb_dead (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT    NOT NULL,
    grp          TEXT    NOT NULL,
    headers      TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    published_at INTEGER NOT NULL,
    dead_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pb_dead_group ON pb_dead (topic, grp, id);
CREATE TABLE IF NOT EXISTS pb_schedules (
    name            TEXT    PRIMARY KEY,
    definition      TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    paused          INTEGER NOT NULL,
    last_tick       INTEGER,
    last_message_id TEXT,
    since           INTEGER NOT NULL,
    claim_owner     TEXT,
    claim_until     INTEGER
);
CREATE TABLE IF NOT EXISTS pb_idempotency (
    scope      TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    done       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
";

/// Options read from the URL.
#[derive(Clone, Debug)]
pub(crate) struct DbOptions {
    pub max_message_bytes: usize,
    pub poll_interval: Duration,
    pub busy_timeout: Duration,
    pub synchronous: &'static str,
}

const KNOWN_PARAMS: &[&str] = &["max_message_bytes", "poll_ms", "busy_timeout_ms", "synchronous"];

impl DbOptions {
    fn from_url(url: &BrokerUrl) -> Result<Self> {
        url.reject_unknown_params(KNOWN_PARAMS)?;
        let max_message_bytes = url.max_message_bytes(512 * 1024 * 1024)?;
        let poll_interval = url.param_millis("poll_ms")?.unwrap_or(Duration::from_millis(50));
        if poll_interval.is_zero() {
            return Err(Error::invalid_option("poll_ms", "must be at least 1"));
        }
        let busy_timeout = url.param_millis("busy_timeout_ms")?.unwrap_or(Duration::from_secs(10));
        let synchronous = match url.param("synchronous").unwrap_or("full") {
            "full" => "FULL",
            "normal" => "NORMAL",
            other => {
                return Err(Error::invalid_option("synchronous", format!("expected `full` or `normal`, got `{other}`")))
            }
        };
        Ok(DbOptions { max_message_bytes, poll_interval, busy_timeout, synchronous })
    }
}

/// One open database, shared by every handle on the same file or memory
/// name in this process.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Mutex<Connection>,
    pub backend: &'static str,
    pub options: DbOptions,
    /// Woken on every publish, retry and release through this process, so
    /// local consumers do not wait for the next poll.
    pub activity: Arc<Notify>,
    /// The same for consumers in other processes, for a file.
    wake: Option<Wake>,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Db>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<Db>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl Db {
    /// Opens (or joins) the database a `memory://[NAME]` or `sqlite://PATH` URL names.
    pub async fn open(url: &BrokerUrl) -> Result<Arc<Db>> {
        let url = url.clone();
        tokio::task::spawn_blocking(move || Db::open_blocking(&url))
            .await
            .map_err(|e| Error::Backend { backend: BACKEND_SQLITE, reason: e.to_string() })?
    }

    fn open_blocking(url: &BrokerUrl) -> Result<Arc<Db>> {
        let options = DbOptions::from_url(url)?;
        let (backend, registry_key, path) = match url.scheme() {
            "memory" => {
                let name = url.path().trim_matches('/');
                let key = if name.is_empty() { None } else { Some(format!("memory:{name}")) };
                (BACKEND_MEMORY, key, None)
            }
            "sqlite" => {
                let raw = url.path();
                if raw.is_empty() {
                    return Err(Error::InvalidUrl {
                        url: url.redacted(),
                        reason:
                            "sqlite:// needs a file path, e.g. sqlite://pillarbox.db or sqlite:///var/lib/app/queue.db"
                                .into(),
                    });
                }
                let path = PathBuf::from(raw);
                let absolute = if path.is_absolute() {
                    path
                } else {
                    std::env::current_dir().map_err(|e| Error::invalid_option("path", e.to_string()))?.join(path)
                };
                (BACKEND_SQLITE, Some(format!("sqlite:{}", absolute.display())), Some(absolute))
            }
            other => return Err(Error::UnknownScheme { scheme: other.to_string() }),
        };

        let mut reg = registry().lock().unwrap();
        if let Some(key) = &registry_key {
            if let Some(db) = reg.get(key).and_then(Weak::upgrade) {
                return Ok(db);
            }
        }
        let conn = match &path {
            None => Connection::open_in_memory(),
            Some(p) => Connection::open_with_flags(
                p,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
        }
        .map_err(|e| Error::Connect { backend, url: url.redacted(), reason: e.to_string() })?;
        init(&conn, backend, &options).map_err(|e| Error::Connect {
            backend,
            url: url.redacted(),
            reason: e.to_string(),
        })?;
        let wake = path.as_deref().map(Wake::new);
        let db = Arc::new(Db { conn: Mutex::new(conn), backend, options, activity: Arc::default(), wake });
        if let Some(key) = registry_key {
            reg.retain(|_, w| w.strong_count() > 0);
            reg.insert(key, Arc::downgrade(&db));
        }
        Ok(db)
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(self);
        let backend = self.backend;
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Backend { backend, reason: format!("database task failed: {e}") })?
    }

    /// Wakes the consumers waiting for work in `topic` (`None`: in any),
    /// here and in other processes: called after a commit that made some
    /// ready (or due sooner).
    pub fn work_ready(&self, topic: Option<&str>) {
        self.activity.notify_waiters();
        if let Some(wake) = &self.wake {
            wake.wake_others(topic);
        }
    }

    /// Lets other processes' `work_ready` for `topic` reach this process's
    /// waiting receives while the guard lives. Called before a receive
    /// first looks for work.
    pub fn listen_to_other_processes(&self, topic: &str) -> Option<WaitingFor> {
        let wake = self.wake.as_ref()?;
        let waiting = wake.waiting_for(topic);
        wake.listen(&self.activity);
        Some(waiting)
    }

    /// Maps a SQLite error to ours.
    pub fn err(&self) -> impl Fn(rusqlite::Error) -> Error + Copy {
        let backend = self.backend;
        move |e| Error::Backend { backend, reason: e.to_string() }
    }
}

/// Sets the database up. Processes that open a new file at the same moment
/// (a web process and a worker starting together) race to switch it to WAL
/// and create the tables; SQLite answers some of those races with "busy" at
/// once instead of waiting, so the set-up is retried until `busy_timeout`.
fn init(conn: &Connection, backend: &str, options: &DbOptions) -> std::result::Result<(), String> {
    let deadline = std::time::Instant::now() + options.busy_timeout;
    loop {
        match init_schema(conn, backend, options) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20 + u64::from(fastrand::u8(..20))));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn init_schema(conn: &Connection, backend: &str, options: &DbOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    if backend == BACKEND_SQLITE {
        // WAL lets readers and one writer work at once across processes.
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", options.synchronous)?;
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        // A newer Pillarbox wrote this file; refuse rather than guess.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!("database schema version {version} is newer than this Pillarbox supports ({SCHEMA_VERSION})")),
        ));
    }
    conn.execute_batch(SCHEMA)?;
    add_missing_columns(conn)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

/// Columns that files made before them lack: who holds an entry and since
/// when (for `consumers`), and schedules' claims. Nullable and unread by
/// older versions, so the schema version stays and an older Pillarbox
/// still opens the file. In a write transaction: two processes opening an
/// old file at once must not both add them.
const ADDED_COLUMNS: [(&str, &str, &str); 4] = [
    ("pb_entries", "consumer", "TEXT"),
    ("pb_entries", "leased_at", "INTEGER"),
    ("pb_schedules", "claim_owner", "TEXT"),
    ("pb_schedules", "claim_until", "INTEGER"),
];

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let missing = |conn: &Connection| -> rusqlite::Result<Vec<(&str, &str, &str)>> {
        let mut found = Vec::new();
        for (table, column, kind) in ADDED_COLUMNS {
            let mut columns = conn.prepare_cached("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?;
            if !columns.exists([table, column])? {
                found.push((table, column, kind));
            }
        }
        Ok(found)
    };
    if missing(conn)?.is_empty() {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let added = (|| {
        for (table, column, kind) in missing(conn)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
        Ok(())
    })();
    conn.execute_batch(if added.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opening a new file while another process holds it locked waits for
    /// the lock rather than failing.
    #[tokio::test]
    async fn opening_waits_for_a_locked_file() {
        let dir = std::env::temp_dir().join(format!("pillarbox-lock-{}-{}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.db");
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE; CREATE TABLE t (x); ").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        let url = BrokerUrl::parse(&format!("sqlite://{}?busy_timeout_ms=5000", path.display())).unwrap();
        let started = std::time::Instant::now();
        Db::open(&url).await.expect("opening a locked file must wait, not fail");
        assert!(started.elapsed() >= Duration::from_millis(250));
        release.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file made before the holder columns gets them, and opens at the
    /// same moment all succeed. (The race the write transaction closes, two
    /// processes both adding a column, is too narrow to hit here on demand;
    /// the multi-process test met it once in a CI-like run.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn old_files_get_the_holder_columns_once_under_concurrent_opens() {
        let dir = std::env::temp_dir().join(format!("pillarbox-cols-{}-{}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(&SCHEMA.replace(
            "    lease        INTEGER,\n    consumer     TEXT,\n    leased_at    INTEGER\n",
            "    lease        INTEGER\n",
        ))
        .unwrap();
        old.pragma_update(None, "user_version", SCHEMA_VERSION).unwrap();
        let columns = |c: &Connection| -> Vec<String> {
            let mut q = c.prepare("SELECT name FROM pragma_table_info('pb_entries')").unwrap();
            q.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        assert!(!columns(&old).contains(&"consumer".to_string()), "the old schema has no holder columns");
        let url = BrokerUrl::parse(&format!("sqlite://{}?busy_timeout_ms=5000", path.display())).unwrap();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Db::open(&url).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().expect("every concurrent open succeeds");
        }
        let now = columns(&old);
        assert!(now.contains(&"consumer".to_string()) && now.contains(&"leased_at".to_string()), "{now:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
