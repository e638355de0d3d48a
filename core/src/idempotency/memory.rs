//! In-process idempotency store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Claim, IdempotencyStore};
use crate::error::Result;

#[derive(Debug)]
enum State {
    Held { owner: String, until: Instant },
    Done { until: Instant },
}

/// Keys kept in this process's memory. See the module docs for what it guarantees.
#[derive(Debug, Default)]
pub struct MemoryStore {
    keys: Mutex<HashMap<(String, String), State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn sweep(keys: &mut HashMap<(String, String), State>, now: Instant) {
        // Amortised clean-up: only when the map has grown.
        if keys.len() > 1024 && keys.len().is_power_of_two() {
            keys.retain(|_, s| match s {
                State::Held { until, .. } | State::Done { until } => *until > now,
            });
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(&self, scope: &str, key: &str, owner: &str, lease: Duration) -> Result<Claim> {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap();
        Self::sweep(&mut keys, now);
        let k = (scope.to_string(), key.to_string());
        let verdict = match keys.get(&k) {
            Some(State::Done { until }) if *until > now => return Ok(Claim::AlreadyDone),
            Some(State::Held { owner: o, until }) if *until > now && o != owner => return Ok(Claim::Busy),
            _ => Claim::Acquired,
        };
        keys.insert(k, State::Held { owner: owner.to_string(), until: now + lease });
        Ok(verdict)
    }

    async fn renew(&self, scope: &str, key: &str, owner: &str, lease: Duration) -> Result<bool> {
        let mut keys = self.keys.lock().unwrap();
        match keys.get_mut(&(scope.to_string(), key.to_string())) {
            Some(State::Held { owner: o, until }) if o == owner => {
                *until = Instant::now() + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn complete(&self, scope: &str, key: &str, _owner: &str, retention: Duration) -> Result<()> {
        let mut keys = self.keys.lock().unwrap();
        keys.insert((scope.to_string(), key.to_string()), State::Done { until: Instant::now() + retention });
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str, owner: &str) -> Result<()> {
        let mut keys = self.keys.lock().unwrap();
        let k = (scope.to_string(), key.to_string());
        if matches!(keys.get(&k), Some(State::Held { owner: o, .. }) if o == owner) {
            keys.remove(&k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claim_done_busy_and_expiry() {
        let s = MemoryStore::new();
        let lease = Duration::from_millis(50);
        assert_eq!(s.claim("t/g", "k", "a", lease).await.unwrap(), Claim::Acquired);
        assert_eq!(s.claim("t/g", "k", "b", lease).await.unwrap(), Claim::Busy);
        assert_eq!(s.claim("t/other", "k", "b", lease).await.unwrap(), Claim::Acquired);
        tokio::time::sleep(Duration::from_millis(80)).await;
        // a's lease expired: b may take over, and a can no longer renew.
        assert_eq!(s.claim("t/g", "k", "b", lease).await.unwrap(), Claim::Acquired);
        assert!(!s.renew("t/g", "k", "a", lease).await.unwrap());
        s.complete("t/g", "k", "b", Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.claim("t/g", "k", "c", lease).await.unwrap(), Claim::AlreadyDone);
        s.release("t/g", "k", "c").await.unwrap();
        assert_eq!(s.claim("t/g", "k", "c", lease).await.unwrap(), Claim::AlreadyDone);
    }
}
