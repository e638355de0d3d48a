//! The embedded schedule store: a table in the same database, so every
//! process sharing the file shares the schedules. Each call is one
//! transaction.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::db::Db;
use crate::error::Result;
use crate::message::{from_millis, to_millis};
use crate::schedule::{Schedule, ScheduleStore, Stored, Upserted};

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

    async fn advance(&self, name: &str, tick: SystemTime, message_id: &str) -> Result<()> {
        let (name, tick, id) = (name.to_string(), to_millis(tick) as i64, message_id.to_string());
        let err = self.db.err();
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE pb_schedules SET last_tick = ?2, last_message_id = ?3 \
                     WHERE name = ?1 AND (last_tick IS NULL OR last_tick < ?2)",
                    params![name, tick, id],
                )
                .map_err(err)?;
                Ok(())
            })
            .await
    }
}
