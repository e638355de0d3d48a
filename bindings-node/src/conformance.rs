//! The core's conformance scenarios with JavaScript handlers: the package's
//! tests run the same suite as the Rust tests, through the same bridge as
//! `Worker`. Each job carries its scenario's script for the handler to act out.

use std::sync::Arc;

use napi::bindgen_prelude::{PromiseRaw, Result};
use napi::Env;
use napi_derive::napi;
use pillarbox::conformance::{self, Handlers, Outcome, Script};
use pillarbox::Handler;

use crate::handler::Dispatcher;

/// The scenarios' names, in order.
#[napi]
pub fn scenarios() -> Vec<String> {
    conformance::scenarios().into_iter().map(|s| s.name.to_string()).collect()
}

/// Runs scenario `name` against `url` with the handlers `dispatcher` serves:
/// resolves to `null` when it passed or the reason it was skipped; rejects
/// with what was seen when it failed.
#[napi]
pub fn run_scenario<'env>(
    env: &'env Env,
    url: String,
    name: String,
    dispatcher: &Dispatcher,
) -> Result<PromiseRaw<'env, Option<String>>> {
    let handlers = Arc::new(JavaScriptHandlers { dispatcher: dispatcher.clone() });
    env.spawn_future(async move {
        match conformance::run_scenario_with(&url, &name, handlers).await {
            Ok(Outcome::Passed) => Ok(None),
            Ok(Outcome::Skipped(why)) => Ok(Some(why)),
            Err(failure) => Err(napi::Error::from_reason(failure.to_string())),
        }
    })
}

struct JavaScriptHandlers {
    dispatcher: Dispatcher,
}

impl Handlers for JavaScriptHandlers {
    fn handler(&self, script: &Script) -> Arc<dyn Handler> {
        Arc::new(self.dispatcher.handler(Some(script.to_json())))
    }
}
