//! The Tokio runtime the language packages run the core on, beside the
//! caller's own threads (Node's event loop, Python's threads).

/// The machine's cores, as the process may use them.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// `PILLARBOX_RUNTIME_THREADS` when set, else `default`; at least one.
pub fn threads(default: usize) -> usize {
    std::env::var("PILLARBOX_RUNTIME_THREADS").ok().and_then(|n| n.parse::<usize>().ok()).unwrap_or(default).max(1)
}

/// A multi-threaded runtime builder with `threads` workers named `pillarbox`.
pub fn builder(threads: usize) -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads).thread_name("pillarbox").enable_all();
    builder
}
