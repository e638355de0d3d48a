//! Inspection: a group's consumers and what they hold, and the group's
//! counts (ready, in flight, waiting, dead) and oldest message. Separate:
//! read-only queries for operators, never on a worker's path.

use std::time::Duration;

use redis::Value;

use super::broker::{now_ms, RedisBroker};
use super::reply::{parse_entries, parse_id, string, xinfo_consumers, xinfo_groups};
use super::{err, scripts, TopicKeys};
use crate::backends::shared;
use crate::broker::{ConsumerInfo, GroupStats};
use crate::error::Result;

impl RedisBroker {
    /// The group's consumers, over both its streams (`Broker::consumers`).
    pub(super) async fn list_consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        let keys = TopicKeys::new(topic);
        let mut conn = self.conn();
        // A consumer reads the topic's stream and the group's stream of due
        // retries: one row per consumer, holdings added up.
        let mut all: Vec<ConsumerInfo> = Vec::new();
        for stream in [keys.stream.clone(), keys.due(group)] {
            for c in xinfo_consumers(&mut conn, &stream, group).await? {
                match all.iter_mut().find(|known| known.name == c.name) {
                    None => all.push(c),
                    Some(known) => {
                        known.holding = Some(known.holding.unwrap_or(0) + c.holding.unwrap_or(0));
                        known.holding_since = match (known.holding_since, c.holding_since) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        known.idle = match (known.idle, c.idle) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
            }
        }
        Ok(all)
    }

    /// The group's counts and oldest message (`Broker::inspect`).
    pub(super) async fn group_stats(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.check_open()?;
        shared::check_names(topic, group)?;
        let keys = TopicKeys::new(topic);
        let mut conn = self.conn();
        let mut stats =
            GroupStats { topic: topic.to_string(), group: group.to_string(), in_flight: Some(0), ..Default::default() };
        let mut oldest: Option<u64> = None;
        let mut note_oldest = |id: &str| {
            if let Some((ms, _)) = parse_id(id) {
                oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
            }
        };
        for stream in [keys.stream.clone(), keys.due(group)] {
            let groups = xinfo_groups(&mut conn, &stream).await?;
            let Some(g) = groups.into_iter().find(|g| g.name == group) else {
                // No such group yet: everything retained is ready for it.
                let len: u64 = redis::cmd("XLEN").arg(&stream).query_async(&mut conn).await.map_err(err)?;
                stats.ready += len;
                continue;
            };
            *stats.in_flight.get_or_insert(0) += g.pending;
            let lag = match g.lag {
                Some(lag) => lag,
                // Redis could not tell (an entry after the group's position
                // was deleted): count what is after it.
                None => count_after(&mut conn, &stream, &g.last_delivered).await?,
            };
            stats.ready += lag;
            if g.pending > 0 {
                let summary: Value =
                    redis::cmd("XPENDING").arg(&stream).arg(group).query_async(&mut conn).await.map_err(err)?;
                if let Value::Array(parts) = &summary {
                    if let Some(id) = parts.get(1).and_then(string) {
                        note_oldest(&id);
                    }
                }
            }
            if lag > 0 {
                let next: Value = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(format!("({}", g.last_delivered))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(err)?;
                if let Some((id, _)) = parse_entries(&next).first() {
                    note_oldest(id);
                }
            }
        }
        let (retrying, delayed, dead): (u64, u64, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(keys.retry(group))
            .cmd("ZCARD")
            .arg(&keys.delay)
            .cmd("XLEN")
            .arg(keys.dlq(group))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        stats.waiting = retrying + delayed;
        stats.dead_letters = dead;
        for z in [keys.retry(group), keys.delay.clone()] {
            // A waiting message's age counts from when it was parked.
            let first: Vec<String> =
                redis::cmd("ZRANGE").arg(&z).arg(0).arg(0).query_async(&mut conn).await.map_err(err)?;
            if let Some(id) = first.first() {
                note_oldest(id);
            }
        }
        let now = now_ms();
        stats.oldest_age = oldest.map(|ms| Duration::from_millis(now.saturating_sub(ms)));
        Ok(stats)
    }
}

/// Entries counted per script call: each call holds Redis for about a
/// millisecond, however long the stream.
const COUNT_PAGE: usize = 1000;

/// How many entries of `stream` come after `after`, counted in Redis a
/// page at a time (an XRANGE would bring every entry here to be counted).
async fn count_after(conn: &mut super::connection::Conn, stream: &str, after: &str) -> Result<u64> {
    let mut total = 0;
    let mut cursor = after.to_string();
    loop {
        let (counted, last): (u64, String) =
            scripts::count_after().key(stream).arg(&cursor).arg(COUNT_PAGE).invoke_async(conn).await.map_err(err)?;
        total += counted;
        if counted < COUNT_PAGE as u64 {
            return Ok(total);
        }
        cursor = last;
    }
}
