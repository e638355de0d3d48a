//! The Redis idempotency store: shared by every process and machine using
//! the same Redis server. Keys are `pb:{SCOPE}:idem:KEY`, holding
//! `held:OWNER` (with the lease as TTL) or `done` (with the retention as TTL).

use std::time::Duration;

use super::connection::Conn;
use async_trait::async_trait;

use super::{err, scripts};
use crate::error::{Error, Result};
use crate::idempotency::{Claim, IdempotencyStore};

/// Idempotency keys in Redis.
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    conn: Conn,
}

impl std::fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisIdempotencyStore")
    }
}

impl RedisIdempotencyStore {
    pub(crate) fn new(conn: Conn) -> Self {
        RedisIdempotencyStore { conn }
    }
}

fn key(scope: &str, key: &str) -> String {
    format!("pb:{{{scope}}}:idem:{key}")
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(&self, scope: &str, k: &str, owner: &str, lease: Duration) -> Result<Claim> {
        let mut conn = self.conn.clone();
        let verdict: i64 = scripts::claim()
            .key(key(scope, k))
            .arg(owner)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        match verdict {
            1 => Ok(Claim::Acquired),
            2 => Ok(Claim::AlreadyDone),
            3 => Ok(Claim::Busy),
            other => {
                Err(Error::Backend { backend: super::BACKEND, reason: format!("unexpected claim answer {other}") })
            }
        }
    }

    async fn renew(&self, scope: &str, k: &str, owner: &str, lease: Duration) -> Result<bool> {
        let mut conn = self.conn.clone();
        let renewed: i64 = scripts::renew()
            .key(key(scope, k))
            .arg(owner)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(renewed == 1)
    }

    async fn complete(&self, scope: &str, k: &str, _owner: &str, retention: Duration) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(key(scope, k))
            .arg("done")
            .arg("PX")
            .arg(millis(retention))
            .query_async::<()>(&mut conn)
            .await
            .map_err(err)
    }

    async fn release(&self, scope: &str, k: &str, owner: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        scripts::release_claim().key(key(scope, k)).arg(owner).invoke_async::<i64>(&mut conn).await.map_err(err)?;
        Ok(())
    }
}
