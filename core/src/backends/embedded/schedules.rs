//! The embedded schedule store: a table in the same database, so every
//! process sharing the file shares the schedules. Each call is one
//! transaction (a pass's claims are one, its records another). A claim is
//! the row's `claim_owner` and `claim_until`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::db::Db;
use crate::error::Result;
use crate::message::{from_millis, to_millis};
use crate::schedule::{Finished, Schedule, ScheduleStore, Stored, TickClaim, Upserted};

/// Schedules in a `memory://NAME` or `sqlite://PATH` database.
#[derive(Debug)]
pub struct SqliteScheduleStore {
    db: Arc<Db>,
}

impl SqliteScheduleStore {
    pub(crate) fn from_db(db: Arc<Db>) -> Self {
        SqliteScheduleStore { db }
    }
}

fn now_ms() -> i64 {
    to_millis(SystemTime::now()) as i64
}

#[async_trait]
impl ScheduleStore for SqliteScheduleStore {
    async fn upsert(&self, schedule: &Schedule) -> Result<Upserted> {
        schedule.check()?;
        let (name, definition, payload) =
            (schedule.name.clone(), schedule.definition_json(), schedule.payload.to_vec());
        let err = self.db.err();
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let found: Option<(String, Vec<u8>)> = tx
                    .prepare_cached("SELECT definition, payload FROM pb_schedules WHERE name = ?1")
                    .map_err(err)?
                    .query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(err)?;
                let upserted = match found {
                    Some((d, p)) if d == definition && p == payload => return Ok(Upserted::Unchanged),
                    Some(_) => {
                        tx.execute(
                            "UPDATE pb_schedules SET definition = ?2, payload = ?3, since = ?4 WHERE name = ?1",
                            params![name, definition, payload, now_ms()],
                        )
                        .map_err(err)?;
                        Upserted::Updated
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO pb_schedules (name, definition, payload, paused, since) VALUES (?1, ?2, ?3, 0, ?4)",
                            params![name, definition, payload, now_ms()],
                        )
                        .map_err(err)?;
                        Upserted::Created
                    }
                };
                tx.commit().map_err(err)?;
                Ok(upserted)
            })
            .await
    }

    async fn list(&self) -> Result<Vec<Stored>> {
        let err = self.db.err();
        let rows = self
            .db
            .call(move |c| {
                let mut statement = c
                    .prepare_cached(
                        "SELECT name, definition, payload, paused, last_tick, last_message_id, since \
                         FROM pb_schedules ORDER BY name",
                    )
                    .map_err(err)?;
                let rows = statement
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, bool>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, i64>(6)?,
                        ))
                    })
                    .map_err(err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(err)?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(name, definition, payload, paused, last_tick, last_message_id, since)| {
                Ok(Stored {
                    schedule: Schedule::from_json(&name, &definition, Bytes::from(payload))?,
                    paused,
                    last_tick: last_tick.map(|t| from_millis(t as u64)),
                    last_message_id,
                    since: from_millis(since as u64),
                })
            })
            .collect()
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        let name = name.to_string();
        let err = self.db.err();
        self.db
            .call(move |c| {
                // Resuming moves `since`: ticks of the pause are not due.
                let n = c
                    .execute(
                        "UPDATE pb_schedules SET since = CASE WHEN paused = 1 AND ?2 = 0 THEN ?3 ELSE since END, \
                         paused = ?2 WHERE name = ?1",
                        params![name, paused, now_ms()],
                    )
                    .map_err(err)?;
                Ok(n > 0)
            })
            .await
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        let err = self.db.err();
        self.db
            .call(move |c| Ok(c.execute("DELETE FROM pb_schedules WHERE name = ?1", params![name]).map_err(err)? > 0))
            .await
    }

    async fn claim(&self, claims: &[TickClaim], owner: &str, lease: Duration) -> Result<Vec<bool>> {
        let claims: Vec<(String, Option<i64>)> =
            claims.iter().map(|c| (c.name.clone(), c.seen.map(|t| to_millis(t) as i64))).collect();
        let (owner, err) = (owner.to_string(), self.db.err());
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let mut held = Vec::with_capacity(claims.len());
                {
                    let mut take = tx
                        .prepare_cached(
                            "UPDATE pb_schedules SET claim_owner = ?2, claim_until = ?3 \
                             WHERE name = ?1 AND last_tick IS ?4 \
                             AND (claim_owner IS NULL OR claim_owner = ?2 OR claim_until <= ?5)",
                        )
                        .map_err(err)?;
                    for (name, seen) in &claims {
                        held.push(take.execute(params![name, owner, until, seen, now]).map_err(err)? == 1);
                    }
                }
                tx.commit().map_err(err)?;
                Ok(held)
            })
            .await
    }

    async fn finish(&self, owner: &str, finished: &[Finished]) -> Result<()> {
        let finished: Vec<(String, Option<(i64, String)>)> = finished
            .iter()
            .map(|f| (f.name.clone(), f.last.as_ref().map(|(t, id)| (to_millis(*t) as i64, id.clone()))))
            .collect();
        let (owner, err) = (owner.to_string(), self.db.err());
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                {
                    let mut record = tx
                        .prepare_cached(
                            "UPDATE pb_schedules SET last_tick = ?2, last_message_id = ?3 \
                             WHERE name = ?1 AND (last_tick IS NULL OR last_tick < ?2)",
                        )
                        .map_err(err)?;
                    let mut release = tx
                        .prepare_cached(
                            "UPDATE pb_schedules SET claim_owner = NULL, claim_until = NULL \
                             WHERE name = ?1 AND claim_owner = ?2",
                        )
                        .map_err(err)?;
                    for (name, last) in &finished {
                        if let Some((tick, id)) = last {
                            record.execute(params![name, tick, id]).map_err(err)?;
                        }
                        release.execute(params![name, owner]).map_err(err)?;
                    }
                }
                tx.commit().map_err(err)
            })
            .await
    }
}
