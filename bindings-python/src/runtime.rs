//! One tokio runtime per process, made on first use, and made again in a
//! child after `fork()`: the parent's runtime threads do not exist there
//! (gunicorn, multiprocessing and Celery-style prefork all fork).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// How often a blocking call looks at Python's signals (Ctrl-C) while it waits.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// This process's runtime.
pub fn runtime() -> &'static Runtime {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    match *slot {
        Some((owner, runtime)) if owner == pid => runtime,
        _ => {
            // A parent's runtime is leaked, never dropped: dropping it would
            // wait for threads that were not forked.
            // As many threads as cores, and at least two: a runtime thread
            // may wait for the GIL (handing a job to a Python handler), and
            // while a handler holds it another thread must go on renewing
            // leases. With one thread, test_worker's
            // test_a_handler_holding_the_gil_past_its_lease_keeps_its_message
            // failed once in a few runs: the message went to another worker.
            let threads = pillarbox::runtime::threads(pillarbox::runtime::cores().max(2));
            let runtime: &'static Runtime = Box::leak(Box::new(
                pillarbox::runtime::builder(threads).build().expect("cannot start Pillarbox's runtime threads"),
            ));
            *slot = Some((pid, runtime));
            runtime
        }
    }
}

/// Runs `future` to completion on the runtime with the GIL released,
/// looking at Python's signals every `SIGNAL_CHECK`: a signal handler that
/// raises (Ctrl-C's `KeyboardInterrupt`) drops the future and raises here.
pub fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = runtime();
    let mut future = Box::pin(future);
    let step = &mut future;
    if let Some(output) = py.detach(move || quick(runtime, step)) {
        return Ok(output);
    }
    loop {
        let step = &mut future;
        // The timer is made inside the runtime, whose clock it needs.
        let waited = py.detach(move || runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK, step).await }));
        if let Ok(output) = waited {
            return Ok(output);
        }
        py.check_signals()?;
    }
}

/// How long a blocking call polls its future on the calling thread before
/// it parks: a broker round trip on a fast network is answered sooner than
/// a parked thread is woken, and one publish at a time is mostly that wake.
const QUICK: Duration = Duration::from_micros(200);

/// Polls `future` on this thread for up to `QUICK`, yielding between polls;
/// its result if it finished by then.
fn quick<F: Future + Unpin>(runtime: &Runtime, future: &mut F) -> Option<F::Output> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }
    let _in_runtime = runtime.enter();
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    let until = std::time::Instant::now() + QUICK;
    loop {
        if flag.0.swap(false, Ordering::AcqRel) {
            if let Poll::Ready(output) = std::pin::Pin::new(&mut *future).poll(&mut cx) {
                return Some(output);
            }
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}
