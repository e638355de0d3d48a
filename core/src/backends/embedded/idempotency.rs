//! The embedded idempotency store: a table in the same database, so every
//! process sharing the file shares the keys.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::db::Db;
use crate::error::Result;
use crate::idempotency::{Claim, IdempotencyStore};
use crate::message::to_millis;
use crate::url::BrokerUrl;

/// Idempotency keys in a `memory://NAME` or `sqlite://PATH` database.
#[derive(Debug)]
pub struct SqliteIdempotencyStore {
    db: Arc<Db>,
}

impl SqliteIdempotencyStore {
    /// Opens the store in the database the URL names.
    pub async fn open(url: &BrokerUrl) -> Result<Self> {
        Ok(SqliteIdempotencyStore { db: Db::open(url).await? })
    }

    pub(crate) fn from_db(db: Arc<Db>) -> Self {
        SqliteIdempotencyStore { db }
    }
}

fn now_ms() -> i64 {
    to_millis(SystemTime::now()) as i64
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotencyStore {
    async fn claim(&self, scope: &str, key: &str, owner: &str, lease: Duration) -> Result<Claim> {
        let (scope, key, owner) = (scope.to_string(), key.to_string(), owner.to_string());
        let err = self.db.err();
        self.db
            .call(move |c| {
                let now = now_ms();
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let row: Option<(String, bool, i64)> = tx
                    .prepare_cached("SELECT owner, done, expires_at FROM pb_idempotency WHERE scope = ?1 AND key = ?2")
                    .map_err(err)?
                    .query_row(params![scope, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .map_err(err)?;
                match row {
                    Some((_, true, expires)) if expires > now => return Ok(Claim::AlreadyDone),
                    Some((holder, false, expires)) if expires > now && holder != owner => return Ok(Claim::Busy),
                    _ => {}
                }
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO pb_idempotency (scope, key, owner, done, expires_at) VALUES (?1, ?2, ?3, 0, ?4)",
                )
                .map_err(err)?
                .execute(params![scope, key, owner, now + lease.as_millis() as i64])
                .map_err(err)?;
                // Expired rows are dropped now and then, not on every claim.
                if fastrand::u8(..) == 0 {
                    tx.execute("DELETE FROM pb_idempotency WHERE expires_at <= ?1", params![now]).map_err(err)?;
                }
                tx.commit().map_err(err)?;
                Ok(Claim::Acquired)
            })
            .await
    }

    async fn renew(&self, scope: &str, key: &str, owner: &str, lease: Duration) -> Result<bool> {
        let (scope, key, owner) = (scope.to_string(), key.to_string(), owner.to_string());
        let err = self.db.err();
        self.db
            .call(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE pb_idempotency SET expires_at = ?4 WHERE scope = ?1 AND key = ?2 AND owner = ?3 AND done = 0",
                    )
                    .map_err(err)?
                    .execute(params![scope, key, owner, now_ms() + lease.as_millis() as i64])
                    .map_err(err)?;
                Ok(n > 0)
            })
            .await
    }

    async fn complete(&self, scope: &str, key: &str, owner: &str, retention: Duration) -> Result<()> {
        let (scope, key, owner) = (scope.to_string(), key.to_string(), owner.to_string());
        let err = self.db.err();
        self.db
            .call(move |c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO pb_idempotency (scope, key, owner, done, expires_at) VALUES (?1, ?2, ?3, 1, ?4)",
                )
                .map_err(err)?
                .execute(params![scope, key, owner, now_ms() + retention.as_millis() as i64])
                .map_err(err)?;
                Ok(())
            })
            .await
    }

    async fn release(&self, scope: &str, key: &str, owner: &str) -> Result<()> {
        let (scope, key, owner) = (scope.to_string(), key.to_string(), owner.to_string());
        let err = self.db.err();
        self.db
            .call(move |c| {
                c.prepare_cached(
                    "DELETE FROM pb_idempotency WHERE scope = ?1 AND key = ?2 AND owner = ?3 AND done = 0",
                )
                .map_err(err)?
                .execute(params![scope, key, owner])
                .map_err(err)?;
                Ok(())
            })
            .await
    }
}
