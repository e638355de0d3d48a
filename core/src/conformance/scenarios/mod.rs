//! The scenarios, by theme. Each takes a [`Ctx`](super::Ctx) and checks
//! what every backend, in every language, must do.

pub(super) mod bad_input;
pub(super) mod crashes;
pub(super) mod delivery;
pub(super) mod failures;
pub(super) mod idempotency;
pub(super) mod inspection;
pub(super) mod schedules;
pub(super) mod shutdown;

/// What every scenario file uses.
mod prelude {
    pub(super) use std::sync::Arc;
    pub(super) use std::time::{Duration, Instant, SystemTime};

    pub(super) use bytes::Bytes;

    pub(super) use super::super::{
        check, fail, numbered, publish, publish_to_group, quick, settled, stats, stats_where, wait_for, Behaviour, Ctx,
        Failing, Failure, Outcome, Recorder, Script,
    };
    pub(super) use crate::broker::ReceiveRequest;
    pub(super) use crate::dead_letter::cause;
    pub(super) use crate::message::{to_millis, Message};
    pub(super) use crate::worker::RetryPolicy;
}
