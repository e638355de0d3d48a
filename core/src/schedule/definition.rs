//! A schedule as data: what a store keeps and every scheduler reads.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Misfire, Timetable};
use crate::message::{from_millis, to_millis};
use crate::{Error, Message, Result};

/// When a schedule fires, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// A cron expression read in an IANA time zone.
    Cron {
        /// 5 fields, or 6 with seconds first; `@daily` and the like.
        expression: String,
        /// `UTC`, `Europe/Berlin`...
        zone: String,
    },
    /// A fixed interval, ticking at whole multiples of it since the epoch
    /// (every minute on the minute), or since `anchor_ms`.
    Every {
        /// The interval in milliseconds (at least 1 s).
        every_ms: u64,
        /// Where the ticks start counting, in ms since the epoch.
        anchor_ms: Option<u64>,
    },
}

impl When {
    /// From the options every language takes: `cron` (with `zone`, UTC by
    /// default) or `every`, not both; an interval counts from `start` when
    /// one is given, else from the epoch.
    pub fn from_options(
        cron: Option<&str>,
        every: Option<Duration>,
        zone: Option<&str>,
        start: Option<SystemTime>,
    ) -> Result<Self> {
        match (cron, every) {
            (Some(expression), None) => {
                Ok(When::Cron { expression: expression.to_string(), zone: zone.unwrap_or("UTC").to_string() })
            }
            (None, Some(every)) if zone.is_none() => Ok(When::Every {
                every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                anchor_ms: start.map(to_millis),
            }),
            (None, Some(_)) => {
                Err(Error::invalid_option("zone", "applies to `cron` only (an interval is the same in every zone)"))
            }
            _ => Err(Error::invalid_option("cron", "give either `cron` (with an optional `zone`) or `every`")),
        }
    }
}

impl Misfire {
    /// From its name as every language spells it: `skip`, `once` or `all`
    /// (with `cap`, default [`Misfire::DEFAULT_CAP`]).
    pub fn from_name(name: &str, cap: Option<u32>) -> Result<Self> {
        match (name, cap) {
            ("skip", None) => Ok(Misfire::Skip),
            ("once", None) => Ok(Misfire::Once),
            ("all", cap) => match cap.unwrap_or(Misfire::DEFAULT_CAP) {
                0 => Err(Error::invalid_option("misfire_cap", "must be at least 1")),
                cap => Ok(Misfire::All { cap }),
            },
            ("skip" | "once", Some(_)) => {
                Err(Error::invalid_option("misfire_cap", "applies to `misfire=\"all\"` only"))
            }
            (other, _) => Err(Error::invalid_option("misfire", format!("must be skip, once or all, not `{other}`"))),
        }
    }

    /// `skip`, `once` or `all`.
    pub fn name(&self) -> &'static str {
        match self {
            Misfire::Skip => "skip",
            Misfire::Once => "once",
            Misfire::All { .. } => "all",
        }
    }
}

/// A named schedule: when it fires and what each tick publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Unique: upserting another schedule of this name replaces it.
    pub name: String,
    /// When it fires.
    pub when: When,
    /// Where each tick's message goes.
    pub topic: String,
    /// What each tick publishes: its payload, key, content type and
    /// headers (each tick gets a fresh id and the tick's idempotency key).
    pub payload: Bytes,
    /// Key of each tick's message.
    pub key: Option<String>,
    /// Content type of each tick's message.
    pub content_type: Option<String>,
    /// Headers of each tick's message.
    pub headers: BTreeMap<String, String>,
    /// No tick before this.
    pub start: Option<SystemTime>,
    /// No tick after this.
    pub end: Option<SystemTime>,
    /// What to do with ticks no scheduler was running for.
    pub misfire: Misfire,
}

impl Schedule {
    /// A schedule that publishes `message`'s payload, key, content type and
    /// headers to `topic` at each tick of `when` (checked: see [`Timetable`]).
    pub fn new(name: &str, when: When, topic: &str, message: &Message) -> Result<Self> {
        let schedule = Schedule {
            name: name.to_string(),
            when,
            topic: topic.to_string(),
            payload: message.payload.clone(),
            key: message.key.clone(),
            content_type: message.content_type.clone(),
            headers: message.headers.clone(),
            start: None,
            end: None,
            misfire: Misfire::default(),
        };
        schedule.check()?;
        Ok(schedule)
    }

    /// The definition checked: a name, a timetable that fires, a topic.
    pub fn check(&self) -> Result<()> {
        if self.name.is_empty() || self.name.len() > 200 || self.name.chars().any(char::is_control) {
            return Err(Error::invalid_option("name", "must be 1 to 200 characters, none of them control characters"));
        }
        crate::message::validate_name("topic", &self.topic)
            .map_err(|e| Error::invalid_option("topic", e.to_string().trim_start_matches("invalid message: ")))?;
        if let (Some(start), Some(end)) = (self.start, self.end) {
            if end < start {
                return Err(Error::invalid_option("end", "must not be before `start`"));
            }
        }
        if let Misfire::All { cap: 0 } = self.misfire {
            return Err(Error::invalid_option("misfire", "`all` needs a cap of at least 1"));
        }
        self.timetable().map(|_| ())
    }

    /// The instants it fires at.
    pub fn timetable(&self) -> Result<Timetable> {
        match &self.when {
            When::Cron { expression, zone } => Timetable::cron(expression, zone),
            When::Every { every_ms, anchor_ms } => {
                Timetable::interval(Duration::from_millis(*every_ms), from_millis(anchor_ms.unwrap_or(0)))
            }
        }
    }

    /// The message of the tick at `tick`: a fresh id, the tick's
    /// idempotency key (see [`super::tick_key`]).
    pub fn message_for(&self, tick: SystemTime) -> Message {
        let mut m = Message::new(self.payload.clone());
        m.key = self.key.clone();
        m.content_type = self.content_type.clone();
        m.headers = self.headers.clone();
        m.idempotency_key = Some(super::tick_key(&self.name, tick));
        m.schedule = Some(self.name.clone());
        m.scheduled_for = Some(tick);
        m
    }

    /// Everything but the payload, as JSON, for stores to keep beside it
    /// (and to compare: an upsert of the same definition changes nothing).
    pub fn definition_json(&self) -> String {
        serde_json::json!({
            "when": self.when,
            "topic": self.topic,
            "key": self.key,
            "content_type": self.content_type,
            "headers": self.headers,
            "start_ms": self.start.map(to_millis),
            "end_ms": self.end.map(to_millis),
            "misfire": match self.misfire {
                Misfire::Skip => serde_json::json!("skip"),
                Misfire::Once => serde_json::json!("once"),
                Misfire::All { cap } => serde_json::json!({ "all": cap }),
            },
        })
        .to_string()
    }

    /// A schedule from what [`Schedule::definition_json`] gave and its payload.
    pub fn from_json(name: &str, json: &str, payload: Bytes) -> Result<Self> {
        let bad = |why: String| Error::Backend { backend: "schedules", reason: format!("schedule {name}: {why}") };
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let text = |field: &str| v[field].as_str().map(str::to_string);
        let time = |field: &str| v[field].as_u64().map(from_millis);
        let misfire = match &v["misfire"] {
            serde_json::Value::String(s) if s == "skip" => Misfire::Skip,
            serde_json::Value::Object(o) => {
                Misfire::All { cap: o.get("all").and_then(|c| c.as_u64()).unwrap_or(1) as u32 }
            }
            _ => Misfire::Once,
        };
        Ok(Schedule {
            name: name.to_string(),
            when: serde_json::from_value(v["when"].clone()).map_err(|e| bad(e.to_string()))?,
            topic: text("topic").ok_or_else(|| bad("no topic".into()))?,
            payload,
            key: text("key"),
            content_type: text("content_type"),
            headers: serde_json::from_value(v["headers"].clone()).unwrap_or_default(),
            start: time("start_ms"),
            end: time("end_ms"),
            misfire,
        })
    }
}

/// A schedule as a store holds it, with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The definition.
    pub schedule: Schedule,
    /// Paused schedules publish nothing; their ticks are skipped, not kept.
    pub paused: bool,
    /// The last tick published.
    pub last_tick: Option<SystemTime>,
    /// The id of the message the last tick published.
    pub last_message_id: Option<String>,
    /// When the definition was made or last changed (or the schedule
    /// resumed): no tick before it is due.
    pub since: SystemTime,
}

impl Stored {
    /// Ticks after this are due (the last published, or `since`).
    pub fn due_after(&self) -> SystemTime {
        self.last_tick.map_or(self.since, |last| last.max(self.since))
    }

    /// When it fires next after `now`, if it does (not paused, not ended).
    pub fn next_run(&self, now: SystemTime) -> Option<SystemTime> {
        if self.paused {
            return None;
        }
        let table = self.schedule.timetable().ok()?;
        let s = &self.schedule;
        super::due(&table, self.due_after(), now, s.misfire, s.start, s.end).next
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// There was no schedule of that name.
    Created,
    /// There was one, with another definition: it was replaced (its state kept).
    Updated,
    /// There was one with this very definition: nothing changed.
    Unchanged,
}
