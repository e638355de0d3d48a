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
mod conformance;
mod errors;
mod handler;
mod logging;
mod message;
mod worker;
