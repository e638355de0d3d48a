//! Backends, one module per cargo feature. Each implements [`crate::Broker`]
//! with primitives only; no policy lives here.

#[cfg(feature = "embedded")]
pub mod embedded;

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "amqp")]
pub mod amqp;

#[cfg(feature = "kafka")]
pub mod kafka;

#[cfg(any(feature = "embedded", feature = "redis", feature = "amqp", feature = "kafka"))]
mod shared;
