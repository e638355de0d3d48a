//! The core's errors as Python exceptions: the class whose `code` is the
//! error's code, from `pillarbox.errors` (Python, so that the hierarchy is
//! plain subclassable Python with docstrings).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use pillarbox::ErrorField;

/// Why an operation failed: the core's error, or a Python one.
pub enum Raise {
    Core(pillarbox::Error),
    Python(PyErr),
}

impl From<pillarbox::Error> for Raise {
    fn from(e: pillarbox::Error) -> Self {
        Raise::Core(e)
    }
}

impl From<PyErr> for Raise {
    fn from(e: PyErr) -> Self {
        Raise::Python(e)
    }
}

impl Raise {
    /// The exception to raise.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            Raise::Core(e) => to_pyerr(py, &e),
            Raise::Python(e) => e,
        }
    }
}

static BY_CODE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// `e` as an instance of its `pillarbox.errors` class, with the variant's
/// fields (`option`, `size`, `limit`...) and `transient` as attributes.
pub fn to_pyerr(py: Python<'_>, e: &pillarbox::Error) -> PyErr {
    let raised = || -> PyResult<PyErr> {
        let table = BY_CODE.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            Ok(py.import("pillarbox.errors")?.getattr("BY_CODE")?.cast_into::<PyDict>()?.unbind())
        })?;
        // Every code has its class: `tests/test_errors.py` checks against `ERROR_CODES`.
        let class = table.bind(py).get_item(e.code())?.ok_or_else(|| {
            pyo3::exceptions::PyRuntimeError::new_err(format!("no exception class for code {}", e.code()))
        })?;
        let fields = PyDict::new(py);
        fields.set_item("transient", e.is_transient())?;
        for (name, value) in e.fields() {
            match value {
                ErrorField::Text(text) => fields.set_item(name, text)?,
                ErrorField::Count(n) => fields.set_item(name, n)?,
                ErrorField::Duration(d) => fields.set_item(name, crate::convert::timedelta(py, d)?)?,
                ErrorField::Missing => fields.set_item(name, py.None())?,
            }
        }
        Ok(PyErr::from_value(class.call((e.to_string(),), Some(&fields))?))
    };
    raised().unwrap_or_else(|lookup| lookup)
}

/// For `?` on core results in synchronous methods.
pub trait OrRaise<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for pillarbox::Result<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_pyerr(py, &e))
    }
}
