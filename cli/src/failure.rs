//! Why a command failed, and the exit status each reason gets.

use std::fmt;

/// Exit statuses, promised to scripts (the command's `--help` lists them).
pub mod exit {
    pub const OK: i32 = 0;
    /// A scenario failed, a scrape failed: the command ran, the answer is no.
    pub const FAILED: i32 = 1;
    /// Bad usage, URL or option.
    pub const USAGE: i32 = 2;
    /// The broker could not be reached.
    pub const UNREACHABLE: i32 = 3;
    /// No such topic, group or dead letter.
    pub const NOT_FOUND: i32 = 4;
    /// A destructive command not confirmed.
    pub const REFUSED: i32 = 5;
}

#[derive(Debug)]
pub enum Failure {
    /// An error from the core (its message already redacts credentials).
    Core(pillarbox::Error),
    Usage(String),
    NotFound(String),
    Refused(String),
    Io(String),
}

impl Failure {
    pub fn exit_status(&self) -> i32 {
        match self {
            Failure::Core(e) => match e.code() {
                "INVALID_URL"
                | "UNKNOWN_SCHEME"
                | "BACKEND_NOT_ENABLED"
                | "INVALID_OPTION"
                | "INVALID_MESSAGE"
                | "MESSAGE_TOO_LARGE"
                | "UNSUPPORTED" => exit::USAGE,
                "CONNECT" | "TIMEOUT" => exit::UNREACHABLE,
                _ => exit::FAILED,
            },
            Failure::Usage(_) => exit::USAGE,
            Failure::NotFound(_) => exit::NOT_FOUND,
            Failure::Refused(_) => exit::REFUSED,
            Failure::Io(_) => exit::FAILED,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Core(e) => write!(f, "{e} [{}]", e.code()),
            Failure::Usage(m) | Failure::NotFound(m) | Failure::Refused(m) | Failure::Io(m) => f.write_str(m),
        }
    }
}

impl From<pillarbox::Error> for Failure {
    fn from(e: pillarbox::Error) -> Self {
        Failure::Core(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e.to_string())
    }
}

pub type Outcome<T = i32> = Result<T, Failure>;
