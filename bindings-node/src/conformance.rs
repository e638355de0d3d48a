//! The core's conformance scenarios with JavaScript handlers: the package's
//! tests run the same suite as the Rust tests, through the same bridge as
//! `Worker`. Each job carries its scenario's script for the handler to act out.

use std::sync::Arc;

use napi::bindgen_prelude::Result;
use napi_derive::napi;
use pillarbox::conformance::{self, Handlers, Outcome, Script};
use pillarbox::Handler;

use crate::handler::{JsCancel, JsHandler, NodeHandler};

/// The scenarios' names, in order.
#[napi]
pub fn scenarios() -> Vec<String> {
    conformance::scenarios().into_iter().map(|s| s.name.to_string()).collect()
}

/// Runs scenario `name` against `url`: resolves to `null` when it passed or
/// the reason it was skipped; rejects with what was seen when it failed.
#[napi]
pub async fn run_scenario(url: String, name: String, handler: JsHandler, cancel: JsCancel) -> Result<Option<String>> {
    let handlers = Arc::new(JavaScriptHandlers { call: Arc::new(handler), cancel: Arc::new(cancel) });
    match conformance::run_scenario_with(&url, &name, handlers).await {
        Ok(Outcome::Passed) => Ok(None),
        Ok(Outcome::Skipped(why)) => Ok(Some(why)),
        Err(failure) => Err(napi::Error::from_reason(format!("[CONFORMANCE] {failure}"))),
    }
}

struct JavaScriptHandlers {
    call: Arc<JsHandler>,
    cancel: Arc<JsCancel>,
}

impl Handlers for JavaScriptHandlers {
    fn handler(&self, script: &Script) -> Arc<dyn Handler> {
        Arc::new(NodeHandler::new(Arc::clone(&self.call), Arc::clone(&self.cancel), Some(script.to_json())))
    }
}
