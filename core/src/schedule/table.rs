//! Schedules and their claims as one value: what the in-process store
//! keeps, and what the RabbitMQ and Kafka stores read, change under their
//! lock and write back (whole, or entry by entry). The rules of every
//! store call live here once; the SQL and Lua stores follow the same.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{Finished, Schedule, Stored, TickClaim, Upserted};
use crate::error::{Error, Result};
use crate::message::{from_millis, to_millis};

/// A schedule, its state, and who holds a claim on it until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The definition and its state.
    pub stored: Stored,
    /// The owner of a claim and when it ends.
    pub claim: Option<(String, SystemTime)>,
}

/// Every schedule of a store, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleTable {
    entries: BTreeMap<String, Entry>,
}

/// Entries and tables are framed by a 4-byte big-endian length; an entry
/// is its JSON, framed, then its payload. A table starts with its format.
const TABLE_FORMAT: &[u8] = b"pb-schedules/1\n";

impl ScheduleTable {
    /// Every schedule, by name.
    pub fn list(&self) -> Vec<Stored> {
        self.entries.values().map(|e| e.stored.clone()).collect()
    }

    /// See [`super::ScheduleStore::upsert`].
    pub fn upsert(&mut self, schedule: &Schedule, now: SystemTime) -> Result<Upserted> {
        schedule.check()?;
        Ok(match self.entries.get_mut(&schedule.name) {
            Some(e) if e.stored.schedule == *schedule => Upserted::Unchanged,
            Some(e) => {
                e.stored.schedule = schedule.clone();
                e.stored.since = now;
                Upserted::Updated
            }
            None => {
                let stored = Stored {
                    schedule: schedule.clone(),
                    paused: false,
                    last_tick: None,
                    last_message_id: None,
                    since: now,
                };
                self.entries.insert(schedule.name.clone(), Entry { stored, claim: None });
                Upserted::Created
            }
        })
    }

    /// See [`super::ScheduleStore::set_paused`].
    pub fn set_paused(&mut self, name: &str, paused: bool, now: SystemTime) -> bool {
        let Some(e) = self.entries.get_mut(name) else { return false };
        if e.stored.paused && !paused {
            e.stored.since = now;
        }
        e.stored.paused = paused;
        true
    }

    /// See [`super::ScheduleStore::remove`].
    pub fn remove(&mut self, name: &str) -> bool {
        self.entries.remove(name).is_some()
    }

    /// See [`super::ScheduleStore::claim`].
    pub fn claim(&mut self, claims: &[TickClaim], owner: &str, lease: Duration, now: SystemTime) -> Vec<bool> {
        claims
            .iter()
            .map(|claim| {
                let Some(e) = self.entries.get_mut(&claim.name) else { return false };
                let free = e.claim.as_ref().is_none_or(|(holder, until)| holder == owner || *until <= now);
                let held = free && e.stored.last_tick == claim.seen;
                if held {
                    e.claim = Some((owner.to_string(), now + lease));
                }
                held
            })
            .collect()
    }

    /// See [`super::ScheduleStore::finish`].
    pub fn finish(&mut self, owner: &str, finished: &[Finished]) {
        for done in finished {
            let Some(e) = self.entries.get_mut(&done.name) else { continue };
            if let Some((tick, id)) = &done.last {
                if e.stored.last_tick.is_none_or(|last| last < *tick) {
                    e.stored.last_tick = Some(*tick);
                    e.stored.last_message_id = Some(id.clone());
                }
            }
            if e.claim.as_ref().is_some_and(|(holder, _)| holder == owner) {
                e.claim = None;
            }
        }
    }

    /// One entry as bytes, `None` if there is no such schedule.
    pub fn encode_entry(&self, name: &str) -> Option<Vec<u8>> {
        let e = self.entries.get(name)?;
        let s = &e.stored;
        let head = serde_json::json!({
            "name": name,
            "definition": s.schedule.definition_json(),
            "paused": s.paused,
            "last_tick_ms": s.last_tick.map(to_millis),
            "last_message_id": s.last_message_id,
            "since_ms": to_millis(s.since),
            "claim_owner": e.claim.as_ref().map(|(owner, _)| owner),
            "claim_until_ms": e.claim.as_ref().map(|(_, until)| to_millis(*until)),
        })
        .to_string();
        let mut out = Vec::with_capacity(4 + head.len() + s.schedule.payload.len());
        frame(&mut out, head.as_bytes());
        out.extend_from_slice(&s.schedule.payload);
        Some(out)
    }

    /// Sets (or with `None`, removes) the entry `name` from its bytes.
    pub fn apply_entry(&mut self, name: &str, bytes: Option<&[u8]>) -> Result<()> {
        match bytes {
            None => {
                self.entries.remove(name);
            }
            Some(bytes) => {
                let entry = decode_entry(bytes)?;
                self.entries.insert(name.to_string(), entry);
            }
        }
        Ok(())
    }

    /// The whole table as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = TABLE_FORMAT.to_vec();
        for name in self.entries.keys() {
            frame(&mut out, &self.encode_entry(name).expect("a listed entry"));
        }
        out
    }

    /// A table from [`ScheduleTable::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut rest = bytes.strip_prefix(TABLE_FORMAT).ok_or_else(|| corrupt("not a table of schedules"))?;
        let mut table = ScheduleTable::default();
        while !rest.is_empty() {
            let (entry, after) = unframe(rest)?;
            let entry = decode_entry(entry)?;
            table.entries.insert(entry.stored.schedule.name.clone(), entry);
            rest = after;
        }
        Ok(table)
    }
}

fn corrupt(why: &str) -> Error {
    Error::Backend { backend: "schedules", reason: format!("a stored schedule is unreadable: {why}") }
}

fn frame(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The framed bytes at the start of `bytes`, and what follows them.
fn unframe(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let (length, rest) = bytes.split_first_chunk::<4>().ok_or_else(|| corrupt("cut short"))?;
    let length = u32::from_be_bytes(*length) as usize;
    if rest.len() < length {
        return Err(corrupt("cut short"));
    }
    Ok(rest.split_at(length))
}

fn decode_entry(bytes: &[u8]) -> Result<Entry> {
    let (head, payload) = unframe(bytes)?;
    let v: serde_json::Value = serde_json::from_slice(head).map_err(|e| corrupt(&e.to_string()))?;
    let name = v["name"].as_str().ok_or_else(|| corrupt("no name"))?;
    let definition = v["definition"].as_str().ok_or_else(|| corrupt("no definition"))?;
    let time = |field: &str| v[field].as_u64().map(from_millis);
    let schedule = Schedule::from_json(name, definition, Bytes::copy_from_slice(payload))?;
    let claim = match (v["claim_owner"].as_str(), time("claim_until_ms")) {
        (Some(owner), Some(until)) => Some((owner.to_string(), until)),
        _ => None,
    };
    Ok(Entry {
        stored: Stored {
            schedule,
            paused: v["paused"].as_bool().unwrap_or(false),
            last_tick: time("last_tick_ms"),
            last_message_id: v["last_message_id"].as_str().map(str::to_string),
            since: time("since_ms").unwrap_or(SystemTime::UNIX_EPOCH),
        },
        claim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::When;
    use crate::Message;

    #[test]
    fn a_table_round_trips_through_its_bytes_and_refuses_garbage() {
        let mut table = ScheduleTable::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for name in ["a", "b"] {
            let when = When::Every { every_ms: 1000, anchor_ms: None };
            let payload = Message::new(vec![0u8, 255, 10, 13]);
            table.upsert(&Schedule::new(name, when, "t", &payload).unwrap(), now).unwrap();
        }
        table.claim(&[TickClaim { name: "a".into(), seen: None }], "me", Duration::from_secs(10), now);
        table.finish("x", &[Finished { name: "b".into(), last: Some((now, "m".into())) }]);
        assert!(table.set_paused("b", true, now));
        let back = ScheduleTable::decode(&table.encode()).unwrap();
        assert_eq!(back, table);
        let mut one = ScheduleTable::default();
        one.apply_entry("a", Some(&table.encode_entry("a").unwrap())).unwrap();
        assert_eq!(one.list(), vec![table.list()[0].clone()]);
        one.apply_entry("a", None).unwrap();
        assert!(one.list().is_empty());
        for garbage in [&b"hello"[..], b"pb-schedules/1\n\0\0\0\x09{}"] {
            assert!(ScheduleTable::decode(garbage).is_err());
        }
    }
}
