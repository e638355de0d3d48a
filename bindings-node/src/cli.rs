//! The `pillarbox` command from the Node package (`npx pillarbox`): the
//! Rust command's own code (`pillarbox_cli`), not a second implementation.

use napi_derive::napi;

/// Runs the command line `argv` (the program name first); returns the exit
/// status. Blocks: the command owns the process while it runs.
#[napi]
pub fn cli(argv: Vec<String>) -> i32 {
    pillarbox_cli::run(argv)
}
