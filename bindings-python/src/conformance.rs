//! The core's conformance scenarios, with Python handlers: the package's
//! tests run the same suite as the Rust tests, through the same bridge as
//! `Worker`.

use std::sync::Arc;

use pillarbox::conformance::{self, Handlers, Outcome, Script};
use pillarbox::{Handler, HandlerError, Job};
use pyo3::prelude::*;

use crate::handler::PyHandler;
use crate::operation::Operation;

/// The scenarios' names, in order.
#[pyfunction]
pub fn scenarios() -> Vec<&'static str> {
    conformance::scenarios().into_iter().map(|s| s.name).collect()
}

/// Runs scenario `name` against `url`. `make_invoker(script_json)` returns
/// the invoker of a Python handler that acts out the script. Resolves to
/// `None` when it passed, or the reason it was skipped; a failure raises
/// `AssertionError` with what was seen.
#[pyfunction]
#[pyo3(signature = (url, name, make_invoker, is_async, event_loop=None))]
pub fn run_scenario(
    url: String,
    name: String,
    make_invoker: Py<PyAny>,
    is_async: bool,
    event_loop: Option<Py<PyAny>>,
) -> Operation {
    let handlers = Arc::new(PythonHandlers { make_invoker, is_async, event_loop });
    Operation::new(async move {
        match conformance::run_scenario_with(&url, &name, handlers).await {
            Ok(Outcome::Passed) => Ok(None),
            Ok(Outcome::Skipped(why)) => Ok(Some(why)),
            Err(failure) => Err(pyo3::exceptions::PyAssertionError::new_err(failure)),
        }
    })
}

struct PythonHandlers {
    make_invoker: Py<PyAny>,
    is_async: bool,
    event_loop: Option<Py<PyAny>>,
}

impl Handlers for PythonHandlers {
    fn handler(&self, script: &Script) -> Arc<dyn Handler> {
        let made = Python::attach(|py| {
            let invoke = self.make_invoker.call1(py, (script.to_json(),))?;
            // As many threads as any scenario runs handlers at once.
            let handler = PyHandler::new(invoke, self.is_async, 4)?;
            handler.set_loop(py, self.event_loop.as_ref().map(|l| l.clone_ref(py)))?;
            PyResult::Ok(handler)
        });
        match made {
            Ok(handler) => Arc::new(handler),
            Err(e) => Arc::new(Refuses(e.to_string())),
        }
    }
}

/// Stands in for a handler Python could not make: every job fails with why.
struct Refuses(String);

#[async_trait::async_trait]
impl Handler for Refuses {
    async fn handle(&self, _job: Job) -> Result<(), HandlerError> {
        Err(HandlerError::fatal(format!("the Python handler could not be made: {}", self.0)))
    }
}
