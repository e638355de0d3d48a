//! Reading Redis replies: entry ids, stream entries and their fields,
//! XREADGROUP, XPENDING and XINFO replies (in RESP2 or RESP3). Separate:
//! the shapes of Redis's answers, apart from what the operations do with
//! them.

use std::time::{Duration, SystemTime};

use super::connection::Conn;
use bytes::Bytes;
use redis::Value;

use super::err;
use super::publish::PAYLOAD;
use crate::broker::ConsumerInfo;
use crate::error::Result;
use crate::message::from_millis;

pub(super) fn split_fields(fields: Vec<(String, Vec<u8>)>) -> (Vec<(String, String)>, Bytes) {
    let mut payload = Bytes::new();
    let mut headers = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        if k == PAYLOAD {
            payload = Bytes::from(v);
        } else {
            let v = String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            headers.push((k, v));
        }
    }
    (headers, payload)
}

pub(super) fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => string(other).and_then(|s| s.parse().ok()),
    }
}

pub(super) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

pub(super) fn id_time(id: &str) -> SystemTime {
    parse_id(id).map(|(ms, _)| from_millis(ms)).unwrap_or_else(SystemTime::now)
}

/// `[[id, [f, v, f, v...]], ...]`; fields are `None` for deleted entries.
type Entry = (String, Option<Vec<(String, Vec<u8>)>>);

pub(super) fn parse_entries(v: &Value) -> Vec<Entry> {
    into_entries(v.clone())
}

/// Like [`parse_entries`], consuming the reply so payloads are moved, not copied.
pub(super) fn into_entries(v: Value) -> Vec<Entry> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else { return None };
            let mut pair = pair.into_iter();
            let id = string(&pair.next()?)?;
            let fields = match pair.next() {
                Some(Value::Array(flat)) => {
                    let mut fields = Vec::with_capacity(flat.len() / 2);
                    let mut flat = flat.into_iter();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        let Some(k) = string(&k) else { continue };
                        let v = match v {
                            Value::BulkString(b) => b,
                            other => match string(&other) {
                                Some(s) => s.into_bytes(),
                                None => continue,
                            },
                        };
                        fields.push((k, v));
                    }
                    Some(fields)
                }
                _ => None,
            };
            Some((id, fields))
        })
        .collect()
}

/// XREADGROUP's reply: per stream key, its entries.
pub(super) fn parse_read_reply(v: Value) -> Vec<(String, Vec<Entry>)> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    let key = string(&pair.next()?)?;
                    Some((key, into_entries(pair.next()?)))
                }
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().filter_map(|(k, e)| Some((string(&k)?, into_entries(e)))).collect(),
        _ => Vec::new(),
    }
}

/// Delivery count from `XPENDING key group id id 1`.
pub(super) fn pending_count(v: &Value) -> Option<u32> {
    let Value::Array(rows) = v else { return None };
    let Value::Array(row) = rows.first()? else { return None };
    int(row.get(3)?).map(|n| n as u32)
}

pub(super) struct GroupInfo {
    pub(super) name: String,
    pub(super) pending: u64,
    pub(super) last_delivered: String,
    pub(super) lag: Option<u64>,
}

pub(super) async fn xinfo_groups(conn: &mut Conn, stream: &str) -> Result<Vec<GroupInfo>> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await;
    let reply = match reply {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let Value::Array(groups) = reply else { return Ok(Vec::new()) };
    Ok(groups
        .iter()
        .filter_map(|g| {
            let pairs: Vec<(String, &Value)> = match g {
                Value::Array(flat) => {
                    flat.chunks(2).filter_map(|kv| Some((string(kv.first()?)?, kv.get(1)?))).collect()
                }
                Value::Map(m) => m.iter().filter_map(|(k, v)| Some((string(k)?, v))).collect(),
                _ => return None,
            };
            let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            Some(GroupInfo {
                name: get("name").and_then(string)?,
                pending: get("pending").and_then(int).unwrap_or(0) as u64,
                last_delivered: get("last-delivered-id").and_then(string).unwrap_or_else(|| "0-0".into()),
                lag: get("lag").and_then(int).map(|n| n as u64),
            })
        })
        .collect())
}

/// The fields of an `XINFO` reply entry, in RESP2 (a flat array) or RESP3 (a map).
fn info_fields(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Array(flat) => flat.chunks(2).filter_map(|kv| Some((string(kv.first()?)?, kv.get(1)?))).collect(),
        Value::Map(m) => m.iter().filter_map(|(k, v)| Some((string(k)?, v))).collect(),
        _ => Vec::new(),
    }
}

/// The consumers of `group` on `stream`: name, pending entries, idle time,
/// and when each received the oldest entry it still holds.
pub(super) async fn xinfo_consumers(conn: &mut Conn, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
    let reply: redis::RedisResult<Value> =
        redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg(group).query_async(conn).await;
    let reply = match reply {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") || e.to_string().contains("NOGROUP") => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let Value::Array(entries) = reply else { return Ok(Vec::new()) };
    let now = SystemTime::now();
    let mut consumers = Vec::with_capacity(entries.len());
    for entry in &entries {
        let fields = info_fields(entry);
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let Some(name) = get("name").and_then(string) else { continue };
        let mut c = ConsumerInfo::named(name);
        let pending = get("pending").and_then(int).unwrap_or(0).max(0) as u64;
        c.holding = Some(pending);
        c.idle = get("idle").and_then(int).map(|ms| Duration::from_millis(ms.max(0) as u64));
        if pending > 0 {
            // The consumer's oldest pending entry: [id, consumer, ms since delivered, deliveries].
            let oldest: Value = redis::cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&c.name)
                .query_async(conn)
                .await
                .map_err(err)?;
            if let Value::Array(rows) = oldest {
                if let Some(Value::Array(row)) = rows.first() {
                    let elapsed = row.get(2).and_then(int).unwrap_or(0).max(0) as u64;
                    c.holding_since = now.checked_sub(Duration::from_millis(elapsed));
                }
            }
        }
        consumers.push(c);
    }
    Ok(consumers)
}
