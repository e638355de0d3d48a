//! The core's errors for JavaScript. A rejected promise cannot carry a
//! custom `code` from an async function, so the reason starts with the
//! code in brackets (`[MESSAGE_TOO_LARGE] ...`) and the facade turns it into
//! `error.code` (see `index.js`, `nativeError`).

/// A core error as a napi error whose reason the facade reads back.
pub fn to_napi(e: pillarbox::Error) -> napi::Error {
    napi::Error::from_reason(format!("[{}] {e}", e.code()))
}

/// An error of this binding's own, with one of the core's codes.
pub fn invalid(code: &str, message: impl std::fmt::Display) -> napi::Error {
    napi::Error::from_reason(format!("[{code}] {message}"))
}

/// For `?` on core results.
pub trait OrThrow<T> {
    fn or_throw(self) -> napi::Result<T>;
}

impl<T> OrThrow<T> for pillarbox::Result<T> {
    fn or_throw(self) -> napi::Result<T> {
        self.map_err(to_napi)
    }
}
