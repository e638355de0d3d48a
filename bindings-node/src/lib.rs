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
mod schedules;
mod surface;
mod worker;

/// The runtime the core runs on, beside the event loop: one thread fewer
/// than the machine has cores (at least one), since the event loop needs a
/// core of its own. More threads than cores cost a context switch per hand-off
/// (on two cores, one-at-a-time publishes to Redis: 4,400-4,800/s with two
/// threads, 5,400-6,200/s with one: docs/node.md). Nothing on these threads ever waits for JavaScript.
/// `PILLARBOX_RUNTIME_THREADS` overrides it.
#[napi_derive::module_init]
fn init() {
    let threads = pillarbox::runtime::threads(pillarbox::runtime::cores() - 1);
    let runtime = pillarbox::runtime::builder(threads).build().expect("cannot start Pillarbox's runtime threads");
    napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
}
