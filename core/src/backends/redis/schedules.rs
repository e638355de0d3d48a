//! The Redis schedule store: shared by every process and machine using the
//! same Redis server. A schedule is the hash `pb:{schedules}:s:NAME`
//! (definition, payload, paused, last_tick, last_message_id, since, and
//! claim_owner, claim_until while a scheduler holds it); the set
//! `pb:{schedules}:names` lists them. One hash tag: the scripts that change
//! schedules (a pass's claims in one, its records in another) run on Redis
//! Cluster too.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::connection::Conn;
use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use super::err;
use crate::error::Result;
use crate::message::{from_millis, to_millis};
use crate::schedule::{Finished, Schedule, ScheduleStore, Stored, TickClaim, Upserted};

const NAMES: &str = "pb:{schedules}:names";

fn key(name: &str) -> String {
    format!("pb:{{schedules}}:s:{name}")
}

fn now_ms() -> u64 {
    to_millis(SystemTime::now())
}

/// Schedules in Redis.
#[derive(Clone)]
pub struct RedisScheduleStore {
    conn: Conn,
}

impl std::fmt::Debug for RedisScheduleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisScheduleStore")
    }
}

impl RedisScheduleStore {
    pub(crate) fn new(conn: Conn) -> Self {
        RedisScheduleStore { conn }
    }
}

/// KEYS: the schedule, the names. ARGV: name, definition, payload, now ms.
/// Returns 1 created, 2 updated, 0 unchanged.
const UPSERT: &str = r#"
local d = redis.call('HMGET', KEYS[1], 'definition', 'payload')
if d[1] then
  if d[1] == ARGV[2] and d[2] == ARGV[3] then return 0 end
  redis.call('HSET', KEYS[1], 'definition', ARGV[2], 'payload', ARGV[3], 'since', ARGV[4])
  return 2
end
redis.call('HSET', KEYS[1], 'definition', ARGV[2], 'payload', ARGV[3], 'paused', 0, 'since', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: the schedule. ARGV: 1 to pause or 0, now ms. Returns 1 if it exists.
const SET_PAUSED: &str = r#"
local paused = redis.call('HGET', KEYS[1], 'paused')
if not paused then return 0 end
if paused == '1' and ARGV[1] == '0' then redis.call('HSET', KEYS[1], 'since', ARGV[2]) end
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
return 1
"#;

/// KEYS: the schedules. ARGV: owner, now ms, until ms, then each
/// schedule's last tick as the scheduler saw it ('' for none). Returns 1
/// for each schedule claimed, 0 for the others.
const CLAIM: &str = r#"
local held = {}
for i, k in ipairs(KEYS) do
  local s = redis.call('HMGET', k, 'definition', 'last_tick', 'claim_owner', 'claim_until')
  local current = s[1] and (s[2] or '') == ARGV[3 + i]
  local free = (not s[3]) or s[3] == ARGV[1] or tonumber(s[4]) <= tonumber(ARGV[2])
  if current and free then
    redis.call('HSET', k, 'claim_owner', ARGV[1], 'claim_until', ARGV[3])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"#;

/// KEYS: the schedules. ARGV: owner, then for each schedule its last tick
/// published ('' for none) and that message's id.
const FINISH: &str = r#"
for i, k in ipairs(KEYS) do
  local tick, id = ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('EXISTS', k) == 1 then
    local last = redis.call('HGET', k, 'last_tick')
    if tick ~= '' and ((not last) or tonumber(last) < tonumber(tick)) then
      redis.call('HSET', k, 'last_tick', tick, 'last_message_id', id)
    end
    if redis.call('HGET', k, 'claim_owner') == ARGV[1] then
      redis.call('HDEL', k, 'claim_owner', 'claim_until')
    end
  end
end
return 0
"#;

/// Each script made (and hashed) once.
fn script(cell: &'static OnceLock<Script>, source: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(source))
}

static UPSERT_SCRIPT: OnceLock<Script> = OnceLock::new();
static SET_PAUSED_SCRIPT: OnceLock<Script> = OnceLock::new();
static CLAIM_SCRIPT: OnceLock<Script> = OnceLock::new();
static FINISH_SCRIPT: OnceLock<Script> = OnceLock::new();

type Row = (Option<String>, Option<Vec<u8>>, Option<String>, Option<u64>, Option<String>, Option<u64>);

#[async_trait]
impl ScheduleStore for RedisScheduleStore {
    async fn upsert(&self, schedule: &Schedule) -> Result<Upserted> {
        schedule.check()?;
        let mut conn = self.conn.clone();
        let answer: i64 = script(&UPSERT_SCRIPT, UPSERT)
            .key(key(&schedule.name))
            .key(NAMES)
            .arg(&schedule.name)
            .arg(schedule.definition_json())
            .arg(&schedule.payload[..])
            .arg(now_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(match answer {
            1 => Upserted::Created,
            2 => Upserted::Updated,
            _ => Upserted::Unchanged,
        })
    }

    async fn list(&self) -> Result<Vec<Stored>> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = redis::cmd("SMEMBERS").arg(NAMES).query_async(&mut conn).await.map_err(err)?;
        names.sort();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // One round trip for all of them.
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HMGET")
                .arg(key(name))
                .arg("definition")
                .arg("payload")
                .arg("paused")
                .arg("last_tick")
                .arg("last_message_id")
                .arg("since");
        }
        let rows: Vec<Row> = pipe.query_async(&mut conn).await.map_err(err)?;
        let mut found = Vec::with_capacity(rows.len());
        for (name, (definition, payload, paused, last_tick, last_message_id, since)) in names.into_iter().zip(rows) {
            // Removed between the two reads.
            let Some(definition) = definition else { continue };
            found.push(Stored {
                schedule: Schedule::from_json(&name, &definition, Bytes::from(payload.unwrap_or_default()))?,
                paused: paused.as_deref() == Some("1"),
                last_tick: last_tick.map(from_millis),
                last_message_id: last_message_id.filter(|id| !id.is_empty()),
                since: from_millis(since.unwrap_or(0)),
            });
        }
        Ok(found)
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        let mut conn = self.conn.clone();
        let found: i64 = script(&SET_PAUSED_SCRIPT, SET_PAUSED)
            .key(key(name))
            .arg(if paused { "1" } else { "0" })
            .arg(now_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(found == 1)
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let (deleted, _): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(key(name))
            .cmd("SREM")
            .arg(NAMES)
            .arg(name)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(deleted > 0)
    }

    async fn claim(&self, claims: &[TickClaim], owner: &str, lease: Duration) -> Result<Vec<bool>> {
        let now = now_ms();
        let mut invocation = script(&CLAIM_SCRIPT, CLAIM).prepare_invoke();
        invocation.arg(owner).arg(now).arg(now + lease.as_millis() as u64);
        for claim in claims {
            invocation.key(key(&claim.name)).arg(claim.seen.map(|t| to_millis(t).to_string()).unwrap_or_default());
        }
        let mut conn = self.conn.clone();
        let held: Vec<i64> = invocation.invoke_async(&mut conn).await.map_err(err)?;
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    async fn finish(&self, owner: &str, finished: &[Finished]) -> Result<()> {
        let mut invocation = script(&FINISH_SCRIPT, FINISH).prepare_invoke();
        invocation.arg(owner);
        for done in finished {
            let (tick, id) = match &done.last {
                Some((tick, id)) => (to_millis(*tick).to_string(), id.as_str()),
                None => (String::new(), ""),
            };
            invocation.key(key(&done.name)).arg(tick).arg(id);
        }
        let mut conn = self.conn.clone();
        let _: i64 = invocation.invoke_async(&mut conn).await.map_err(err)?;
        Ok(())
    }
}
