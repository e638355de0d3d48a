//! The Node package's native addon: the Pillarbox core, driven from JavaScript.
//!
//! Thin on purpose: arguments are converted, the core is called, errors are
//! mapped. Retries, dead letters, idempotency, leases and shutdown are the
//! core worker's; the JavaScript facade (`index.js`) gives the API its
//! JavaScript shape (option objects, milliseconds, errors with `code`,
//! `Retry` and `Fatal`, `AbortSignal`).

// napi registers the exported items only outside `cfg(test)`, where they
// would otherwise read as unused (clippy --all-targets builds that too).
#![cfg_attr(test, allow(dead_code))]

mod bench;
mod broker;
mod cli;
mod completions;
mod conformance;
mod errors;
mod handler;
mod logging;
mod message;
mod worker;

/// The runtime the core runs on, beside the event loop: one thread fewer
/// than the machine has cores (at least one), since the event loop needs a
/// core of its own. More threads than cores cost a context switch per hand-off
/// (on two cores: one-at-a-time publishes at 5,900/s with two threads,
/// 8,800/s with one). `PILLARBOX_RUNTIME_THREADS` overrides it.
#[napi_derive::module_init]
fn init() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let threads = std::env::var("PILLARBOX_RUNTIME_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(cores - 1)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("pillarbox")
        .enable_all()
        .build()
        .expect("cannot start Pillarbox's runtime threads");
    napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
}
