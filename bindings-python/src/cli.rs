//! The `pillarbox` command from the Python package: the Rust command's own
//! code (`pillarbox_cli`), not a second implementation.

use pyo3::prelude::*;

/// Runs the command line `argv` (the program name first) with the GIL
/// released; returns the exit status.
#[pyfunction]
pub fn cli(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(move || pillarbox_cli::run(argv))
}
