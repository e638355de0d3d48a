//! Waking idle consumers in other processes when work arrives in a
//! sqlite:// file, so they need not wait for their next poll.
//!
//! How: a process that waits in `receive` binds one Unix datagram socket in
//! a directory beside the database (`queue.db-wake/PID-RANDOM`), and a
//! thread blocked on it wakes the process's waiting receives (the
//! in-process `activity` notification). After a commit that makes work
//! ready, a process sends the topic's name, without blocking, to each other
//! socket in that directory; a listener wakes its receives only if one of
//! them waits for that topic (an idle worker of another topic would
//! otherwise look, a write transaction, at every publish). The `poll_ms` poll stays: it covers
//! delayed messages and retries coming due, expired leases, and any
//! process this cannot reach.
//!
//! Why datagram sockets: the standard library has them on Linux and macOS
//! alike (no new dependency, no `unsafe`); a send is one system call per
//! waiting process and never blocks (a full socket means its owner has a
//! wake-up pending anyway); a socket whose process died refuses the send,
//! which tells the sender to remove it. Watching a file that publishers
//! touch (inotify, kqueue, FSEvents) needs a crate per platform (the
//! `notify` crate brings eight or so), each listener takes one of the few
//! inotify instances a user may have (128 by default), and FSEvents
//! coalesces events for milliseconds; a shared-memory counter needs
//! `unsafe` (mmap) and still polls.
//!
//! Anything that goes wrong (a directory that cannot be created, a path too
//! long for a socket address, about 100 bytes) logs one warning and leaves
//! that process on the poll alone; nothing here fails a publish or a
//! receive.

use std::path::{Path, PathBuf};

/// Where the sockets for the database at `db` live: `DB-wake` beside it.
pub(crate) fn dir_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-wake");
    db.with_file_name(name)
}

#[cfg(unix)]
pub(crate) use unix::{WaitingFor, Wake};

#[cfg(unix)]
mod unix {
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::io::ErrorKind;
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::UnixDatagram;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, SystemTime};

    use tokio::sync::Notify;

    /// How often the listening thread checks that its socket file is still
    /// there (someone may clean the directory) and whether to stop.
    const CHECK_EVERY: Duration = Duration::from_secs(2);

    /// A directory listing taken this soon after the directory changed may
    /// miss a socket bound within the same timestamp tick (Linux stamps
    /// files with a clock that advances every few milliseconds), so it is
    /// taken again on the next send.
    const SETTLE: Duration = Duration::from_millis(100);

    /// A wake-up for every topic (a release may hand back several).
    const ANY_TOPIC: &[u8] = b"*";

    /// The topics this process's receives wait for, and how many wait.
    type Waiting = Mutex<HashMap<String, usize>>;

    /// One per database file and process.
    #[derive(Debug)]
    pub(crate) struct Wake {
        dir: PathBuf,
        waiting: Arc<Waiting>,
        /// Bound by the first receive that may wait; `None` if that failed.
        listener: OnceLock<Option<Listener>>,
        sender: Mutex<Sender>,
        warned: AtomicBool,
    }

    #[derive(Debug)]
    struct Listener {
        name: OsString,
        path: PathBuf,
        stop: Arc<AtomicBool>,
    }

    /// The sending side: an unbound socket and the listing of the directory.
    #[derive(Debug, Default)]
    struct Sender {
        socket: Option<UnixDatagram>,
        peers: Vec<PathBuf>,
        /// The directory's modification time at the last listing, and when
        /// that listing was taken; `None`: list again.
        listed: Option<(SystemTime, SystemTime)>,
    }

    impl Wake {
        pub(crate) fn new(db: &Path) -> Wake {
            Wake {
                dir: super::dir_for(db),
                waiting: Arc::default(),
                listener: OnceLock::new(),
                sender: Mutex::default(),
                warned: AtomicBool::new(false),
            }
        }

        /// Starts listening for other processes' wake-ups (once; later calls
        /// return at once). A receive calls this before it first looks for
        /// work, so nothing committed after that look goes unnoticed.
        pub(crate) fn listen(&self, activity: &Arc<Notify>) {
            self.listener.get_or_init(|| match Listener::start(&self.dir, activity, &self.waiting) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    self.warn_once(&format!("cannot listen in {}: {e}", self.dir.display()));
                    None
                }
            });
        }

        /// Marks `topic` as waited for here until the guard drops: other
        /// processes' wake-ups for it then reach this process's receives.
        pub(crate) fn waiting_for(&self, topic: &str) -> WaitingFor {
            *self.waiting.lock().unwrap_or_else(|p| p.into_inner()).entry(topic.to_string()).or_default() += 1;
            WaitingFor { waiting: Arc::clone(&self.waiting), topic: topic.to_string() }
        }

        /// Wakes the other processes' listeners waiting for `topic` (`None`:
        /// for any): called after a commit that made work ready. About a
        /// microsecond when nobody listens (one `stat` of the directory),
        /// plus one send per listening process.
        pub(crate) fn wake_others(&self, topic: Option<&str>) {
            let own = self.listener.get().and_then(Option::as_ref).map(|l| l.name.as_os_str());
            let mut sender = self.sender.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let changed = match std::fs::metadata(&self.dir).and_then(|m| m.modified()) {
                Ok(changed) => changed,
                Err(_) => {
                    // No directory: no process has listened yet.
                    sender.peers.clear();
                    sender.listed = None;
                    return;
                }
            };
            let fresh = matches!(sender.listed, Some((seen, at)) if seen == changed && at > changed + SETTLE);
            if !fresh {
                let at = SystemTime::now();
                match list(&self.dir, own) {
                    Ok(peers) => {
                        sender.peers = peers;
                        sender.listed = Some((changed, at));
                    }
                    Err(e) => {
                        self.warn_once(&format!("cannot list {}: {e}", self.dir.display()));
                        return;
                    }
                }
            }
            if sender.peers.is_empty() {
                return;
            }
            if sender.socket.is_none() {
                match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                    Ok(socket) => sender.socket = Some(socket),
                    Err(e) => return self.warn_once(&format!("cannot create a socket to wake consumers: {e}")),
                }
            }
            let Sender { socket: Some(socket), peers, listed } = &mut *sender else { return };
            for peer in peers.iter() {
                match socket.send_to(topic.map_or(ANY_TOPIC, str::as_bytes), peer) {
                    // Refused: its process is gone. (Bind creates the file and
                    // binds at once, so a live socket never refuses.)
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        let _ = std::fs::remove_file(peer);
                        *listed = None;
                    }
                    // Full (a wake-up is pending already), removed since the
                    // listing (the next send lists again), or not ours to
                    // write to: nothing to do.
                    Ok(_) | Err(_) => {}
                }
            }
        }

        fn warn_once(&self, what: &str) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "sqlite://: {what}; idle consumers in other processes see new work at their next poll (poll_ms) instead"
                );
            }
        }
    }

    impl Drop for Wake {
        fn drop(&mut self) {
            if let Some(Some(listener)) = self.listener.get() {
                listener.stop.store(true, Ordering::Release);
                // Wake the thread so it sees `stop`, then take the socket away.
                if let Ok(socket) = UnixDatagram::unbound() {
                    let _ = socket.set_nonblocking(true);
                    let _ = socket.send_to(ANY_TOPIC, &listener.path);
                }
                let _ = std::fs::remove_file(&listener.path);
            }
        }
    }

    /// A receive's mark on its topic (see `Wake::waiting_for`).
    pub(crate) struct WaitingFor {
        waiting: Arc<Waiting>,
        topic: String,
    }

    impl Drop for WaitingFor {
        fn drop(&mut self) {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = waiting.get_mut(&self.topic) {
                *n -= 1;
                if *n == 0 {
                    waiting.remove(&self.topic);
                }
            }
        }
    }

    /// The sockets in `dir`, but `own`.
    fn list(dir: &Path, own: Option<&std::ffi::OsStr>) -> std::io::Result<Vec<PathBuf>> {
        let mut peers = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if Some(entry.file_name().as_os_str()) != own && entry.file_type().is_ok_and(|t| t.is_socket()) {
                peers.push(entry.path());
            }
        }
        Ok(peers)
    }

    fn bind(dir: &Path, path: &Path) -> std::io::Result<UnixDatagram> {
        std::fs::create_dir_all(dir)?;
        let socket = UnixDatagram::bind(path)?;
        socket.set_read_timeout(Some(CHECK_EVERY))?;
        Ok(socket)
    }

    impl Listener {
        fn start(dir: &Path, activity: &Arc<Notify>, waiting: &Arc<Waiting>) -> std::io::Result<Listener> {
            let name = OsString::from(format!("{}-{:08x}", std::process::id(), fastrand::u32(..)));
            let path = dir.join(&name);
            let socket = bind(dir, &path)?;
            let stop = Arc::new(AtomicBool::new(false));
            let (thread_dir, thread_path, thread_stop) = (dir.to_path_buf(), path.clone(), Arc::clone(&stop));
            let (activity, waiting) = (Arc::clone(activity), Arc::clone(waiting));
            let spawned = std::thread::Builder::new()
                .name("pillarbox-wake".into())
                .spawn(move || listen(socket, &thread_dir, &thread_path, &thread_stop, &activity, &waiting));
            if let Err(e) = spawned {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Ok(Listener { name, path, stop })
        }
    }

    /// The listening thread: a datagram naming a topic some receive here
    /// waits for (or any topic) wakes this process's waiting receives. Every `CHECK_EVERY` it checks its socket file is still
    /// there and binds again if not (a directory cleaned by hand, or a
    /// sender that wrongly took it for a dead one).
    fn listen(
        mut socket: UnixDatagram,
        dir: &Path,
        path: &Path,
        stop: &AtomicBool,
        activity: &Notify,
        waiting: &Waiting,
    ) {
        // Topic names are at most 200 bytes.
        let mut buf = [0u8; 256];
        let mut warned = false;
        while !stop.load(Ordering::Acquire) {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let topic = &buf[..n];
                    let wanted = topic == ANY_TOPIC
                        || std::str::from_utf8(topic)
                            .is_ok_and(|t| waiting.lock().unwrap_or_else(|p| p.into_inner()).contains_key(t));
                    if wanted {
                        activity.notify_waiters();
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    if std::fs::symlink_metadata(path).is_err() && !stop.load(Ordering::Acquire) {
                        match bind(dir, path) {
                            Ok(again) => socket = again,
                            Err(e) if !warned => {
                                warned = true;
                                tracing::warn!(
                                    "sqlite://: cannot listen in {} again: {e}; idle consumers in other processes see new work at their next poll (poll_ms) instead",
                                    dir.display()
                                );
                            }
                            Err(_) => {}
                        }
                    }
                }
                Err(_) => std::thread::sleep(CHECK_EVERY),
            }
        }
        let _ = std::fs::remove_file(path);
    }
}

/// Elsewhere, the poll alone.
#[cfg(not(unix))]
#[derive(Debug)]
pub(crate) struct Wake;

#[cfg(not(unix))]
impl Wake {
    pub(crate) fn new(_db: &Path) -> Wake {
        Wake
    }
    pub(crate) fn listen(&self, _activity: &std::sync::Arc<tokio::sync::Notify>) {}
    pub(crate) fn waiting_for(&self, _topic: &str) -> WaitingFor {
        WaitingFor
    }
    pub(crate) fn wake_others(&self, _topic: Option<&str>) {}
}

#[cfg(not(unix))]
pub(crate) struct WaitingFor;

#[cfg(all(test, unix))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;
    use crate::broker::ReceiveRequest;
    use crate::message::Message;

    fn scratch(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pb-{what}-{}-{}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Two handles on one file stand for two processes: one's wake-up
    /// reaches the other's listener.
    #[tokio::test]
    async fn a_wake_up_reaches_the_other_listener() {
        let dir = scratch("wake");
        let db = dir.join("q.db");
        let (listening, publishing) = (Wake::new(&db), Wake::new(&db));
        let activity = Arc::new(Notify::new());
        listening.listen(&activity);
        let waiting = listening.waiting_for("t");
        let notified = activity.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        publishing.wake_others(Some("t"));
        tokio::time::timeout(Duration::from_secs(1), notified).await.expect("woken");
        // Not for a topic nobody here waits for.
        let notified = activity.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        publishing.wake_others(Some("other"));
        assert!(tokio::time::timeout(Duration::from_millis(200), notified).await.is_err());
        drop(waiting);
        let notified = activity.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        publishing.wake_others(Some("t"));
        assert!(tokio::time::timeout(Duration::from_millis(200), notified).await.is_err());
        let _waiting = listening.waiting_for("t");
        // Its own wake-up does not go to itself.
        let notified = activity.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        listening.wake_others(None);
        assert!(tokio::time::timeout(Duration::from_millis(200), notified).await.is_err());
        drop(listening);
        assert_eq!(std::fs::read_dir(dir_for(&db)).unwrap().count(), 0, "a closed listener leaves no socket");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A socket left by a process that died is removed by the next sender.
    #[test]
    fn a_dead_listeners_socket_is_removed() {
        let dir = scratch("wake-dead");
        let db = dir.join("q.db");
        std::fs::create_dir_all(dir_for(&db)).unwrap();
        let dead = dir_for(&db).join("1-deadbeef");
        drop(std::os::unix::net::UnixDatagram::bind(&dead).unwrap());
        assert!(dead.exists());
        Wake::new(&db).wake_others(None);
        assert!(!dead.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Where the directory cannot be made (a file has its name), consumers
    /// fall back to the poll and nothing fails.
    #[tokio::test]
    async fn an_unusable_directory_leaves_the_poll() {
        let dir = scratch("wake-file");
        let db = dir.join("q.db");
        std::fs::write(dir_for(&db), b"not a directory").unwrap();
        let broker = crate::connect(&format!("sqlite://{}?poll_ms=20", db.display())).await.unwrap();
        broker.ensure_group("t", "g").await.unwrap();
        let request = || ReceiveRequest {
            topic: "t",
            group: "g",
            consumer: "c",
            max: 1,
            window: 1,
            wait: Duration::from_millis(100),
            lease: Duration::from_secs(30),
        };
        assert!(broker.receive(request()).await.unwrap().is_empty());
        broker.publish("t", vec![Message::new("m")]).await.unwrap();
        assert_eq!(broker.receive(request()).await.unwrap().len(), 1);
        broker.close().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
