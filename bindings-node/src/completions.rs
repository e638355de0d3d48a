//! Publishes settled without a Promise and a threadsafe function each.
//!
//! A napi `async fn` makes a Promise and a threadsafe function (a libuv
//! handle) for every call; for `publish`, the call people make most, that
//! was most of the cost of a round trip to Redis. Here one threadsafe
//! function serves every call: the call is spawned on the runtime with a
//! ticket, its result is queued, and the event loop is woken once for all
//! results queued meanwhile; the facade settles each ticket's Promise.
//!
//! The threadsafe function keeps Node alive only while calls are
//! outstanding, as the Promises of `async fn`s do.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Array, Null};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Env, Status};
use napi_derive::napi;

use crate::handler::JsWake;

/// How many values each settled call takes in the array `take` returns:
/// ticket, value (or null), error (or null).
pub const FIELDS: u32 = 3;

/// A call's ticket and its ids, or why it failed (the error as `errors.rs` encodes it).
type Settled = (u32, Result<Vec<String>, String>);

struct Shared {
    wake: Mutex<JsWake>,
    settled: Mutex<Vec<Settled>>,
    woken: AtomicBool,
    /// Calls started and not yet taken (touched on the JavaScript thread only).
    outstanding: AtomicU32,
}

#[napi]
pub struct Completions {
    shared: Arc<Shared>,
}

#[napi]
impl Completions {
    /// `wake`: called (with no argument) when calls have settled.
    #[napi(constructor)]
    pub fn new(wake: JsWake) -> Self {
        let shared = Shared {
            wake: Mutex::new(wake),
            settled: Mutex::new(Vec::new()),
            woken: AtomicBool::new(false),
            outstanding: AtomicU32::new(0),
        };
        Completions { shared: Arc::new(shared) }
    }

    /// Every call settled since the last time, `FIELDS` values each.
    #[napi]
    pub fn take<'env>(&self, env: &'env Env) -> napi::Result<Array<'env>> {
        self.shared.woken.store(false, Ordering::SeqCst);
        let settled = std::mem::take(&mut *self.shared.settled.lock().unwrap());
        let count = settled.len() as u32;
        let mut rows = env.create_array(count * FIELDS)?;
        for (n, (ticket, result)) in settled.into_iter().enumerate() {
            let at = n as u32 * FIELDS;
            rows.set(at, ticket)?;
            match result {
                Ok(ids) => {
                    rows.set(at + 1, ids)?;
                    rows.set(at + 2, Null)?;
                }
                Err(reason) => {
                    rows.set(at + 1, Null)?;
                    rows.set(at + 2, reason)?;
                }
            }
        }
        let left = self.shared.outstanding.fetch_sub(count, Ordering::SeqCst) - count;
        if left == 0 {
            #[allow(deprecated)] // napi_unref_threadsafe_function, which is what is meant here
            self.shared.wake.lock().unwrap().unref(env)?;
        }
        Ok(rows)
    }
}

impl Completions {
    /// Runs `call` on the runtime; its result settles `ticket`. On the
    /// JavaScript thread.
    pub fn start<F>(&self, env: &Env, ticket: u32, call: F) -> napi::Result<()>
    where
        F: Future<Output = napi::Result<Vec<String>>> + Send + 'static,
    {
        if self.shared.outstanding.fetch_add(1, Ordering::SeqCst) == 0 {
            #[allow(deprecated)] // napi_ref_threadsafe_function: Node waits for the result
            self.shared.wake.lock().unwrap().refer(env)?;
        }
        let shared = Arc::clone(&self.shared);
        napi::bindgen_prelude::spawn(async move {
            let result = call.await.map_err(|e| e.reason.clone());
            shared.settled.lock().unwrap().push((ticket, result));
            if !shared.woken.swap(true, Ordering::SeqCst) {
                let status = shared.wake.lock().unwrap().call((), ThreadsafeFunctionCallMode::NonBlocking);
                if status != Status::Ok {
                    shared.woken.store(false, Ordering::SeqCst);
                }
            }
        });
        Ok(())
    }
}
