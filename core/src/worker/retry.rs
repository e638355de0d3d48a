//! The one retry budget: how many retries, and how long each waits.

use std::time::Duration;

use crate::error::{Error, Result};

/// Exponential backoff with a cap and jitter.
///
/// Retry `n` (1-based) waits `min(max_delay, initial_delay * multiplier^(n-1))`,
/// shortened by a random fraction of at most `jitter` so that retries of many
/// messages spread out. The wait happens on the broker side.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 means one attempt only.
    pub max_retries: u32,
    /// Wait before the first retry.
    pub initial_delay: Duration,
    /// Growth factor between retries (>= 1).
    pub multiplier: f64,
    /// Upper bound on any wait.
    pub max_delay: Duration,
    /// Fraction (0..=1) of each wait that may be taken off at random.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 3 retries, waiting about 1 s, 2 s, 4 s; never more than 5 minutes.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_retries` retries with the default backoff.
    pub fn retries(max_retries: u32) -> Self {
        RetryPolicy { max_retries, ..Self::default() }
    }

    /// Sets the backoff.
    pub fn with_backoff(mut self, initial_delay: Duration, multiplier: f64, max_delay: Duration) -> Self {
        self.initial_delay = initial_delay;
        self.multiplier = multiplier;
        self.max_delay = max_delay;
        self
    }

    /// Sets the jitter fraction.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Total attempts allowed: `max_retries + 1`.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::invalid_option("retry.multiplier", "must be a number >= 1"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid_option("retry.jitter", "must be between 0 and 1"));
        }
        if self.max_delay < self.initial_delay {
            return Err(Error::invalid_option("retry.max_delay", "must be at least retry.initial_delay"));
        }
        Ok(())
    }

    /// The wait before retry `retry` (1-based), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let factor = self.multiplier.powi(retry.saturating_sub(1).min(1000) as i32);
        let secs = (self.initial_delay.as_secs_f64() * factor).min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    /// The wait before retry `retry` (1-based), jitter applied.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        base.mul_f64(1.0 - self.jitter * fastrand::f64())
    }

    /// The longest time from the first failure to the last retry.
    pub fn horizon(&self) -> Duration {
        (1..=self.max_retries.min(10_000)).map(|n| self.base_delay(n)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_capped_and_jittered() {
        let p = RetryPolicy::retries(5).with_backoff(Duration::from_millis(100), 2.0, Duration::from_millis(500));
        assert_eq!(p.base_delay(1), Duration::from_millis(100));
        assert_eq!(p.base_delay(2), Duration::from_millis(200));
        assert_eq!(p.base_delay(3), Duration::from_millis(400));
        assert_eq!(p.base_delay(4), Duration::from_millis(500));
        assert_eq!(p.horizon(), Duration::from_millis(100 + 200 + 400 + 500 + 500));
        for _ in 0..100 {
            let d = p.delay(2);
            assert!(d <= Duration::from_millis(200) && d >= Duration::from_millis(160), "{d:?}");
        }
        assert_eq!(p.max_attempts(), 6);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(RetryPolicy::default().with_jitter(1.5).validate().is_err());
        assert!(RetryPolicy::default()
            .with_backoff(Duration::from_secs(2), 0.5, Duration::from_secs(9))
            .validate()
            .is_err());
        assert!(RetryPolicy::default()
            .with_backoff(Duration::from_secs(2), 2.0, Duration::from_secs(1))
            .validate()
            .is_err());
        assert!(RetryPolicy::default().validate().is_ok());
    }
}
