//! Schedules from JavaScript: the broker's calls that keep them, the
//! record a listing gives, and the scheduler that publishes their ticks.
//! The facade (lib/schedules.js) checks the options first.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use pillarbox::schedule::{Misfire, Schedule, Scheduler, Stored, Upserted, When};
use pillarbox::Message;

use crate::broker::Broker;
use crate::errors::OrThrow;
use crate::message::millis;

/// What a schedule is and publishes (times in milliseconds since the epoch).
#[napi(object)]
pub struct ScheduleOptions {
    pub cron: Option<String>,
    pub every_ms: Option<f64>,
    pub zone: Option<String>,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub misfire: Option<String>,
    pub misfire_cap: Option<u32>,
    pub key: Option<String>,
    pub headers: Option<HashMap<String, String>>,
    pub content_type: Option<String>,
}

/// The core's error with its option named as JavaScript names it.
fn js_names(e: pillarbox::Error) -> pillarbox::Error {
    match e {
        pillarbox::Error::InvalidOption { name, reason } => {
            let name = match name.as_str() {
                "every" => "everyMs".to_string(),
                "misfire_cap" => "misfireCap".to_string(),
                _ => name,
            };
            pillarbox::Error::InvalidOption { name, reason: reason.replace("at least 1 s", "at least 1000 ms") }
        }
        other => other,
    }
}

fn at(ms: Option<f64>, name: &str) -> Result<Option<SystemTime>> {
    ms.map(|ms| millis(ms, name).map(|d| SystemTime::UNIX_EPOCH + d)).transpose()
}

impl ScheduleOptions {
    fn to_core(&self, name: &str, topic: &str, payload: &[u8]) -> Result<Schedule> {
        let mut message = Message::new(payload.to_vec());
        message.key = self.key.clone();
        message.content_type = self.content_type.clone();
        message.headers = self.headers.clone().unwrap_or_default().into_iter().collect();
        let every: Option<Duration> = self.every_ms.map(|ms| millis(ms, "everyMs")).transpose()?;
        let start = at(self.start, "start")?;
        let when = When::from_options(self.cron.as_deref(), every, self.zone.as_deref(), start)
            .map_err(js_names)
            .or_throw()?;
        let misfire = match (&self.misfire, self.misfire_cap) {
            (Some(name), cap) => Misfire::from_name(name, cap).map_err(js_names).or_throw()?,
            (None, Some(cap)) => Misfire::from_name("all", Some(cap)).map_err(js_names).or_throw()?,
            (None, None) => Misfire::default(),
        };
        let mut schedule = Schedule::new(name, when, topic, &message).map_err(js_names).or_throw()?;
        (schedule.start, schedule.end, schedule.misfire) = (start, at(self.end, "end")?, misfire);
        schedule.check().map_err(js_names).or_throw()?;
        Ok(schedule)
    }
}

/// A schedule and its state (times in milliseconds since the epoch).
#[napi(object)]
pub struct ScheduleInfo {
    pub name: String,
    pub topic: String,
    pub cron: Option<String>,
    pub zone: Option<String>,
    pub every_ms: Option<f64>,
    pub misfire: String,
    pub misfire_cap: Option<u32>,
    pub paused: bool,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub last_run: Option<f64>,
    pub next_run: Option<f64>,
    pub last_message_id: Option<String>,
}

fn ms(t: SystemTime) -> f64 {
    pillarbox::message::to_millis(t) as f64
}

impl From<Stored> for ScheduleInfo {
    fn from(stored: Stored) -> Self {
        let next_run = stored.next_run(SystemTime::now()).map(ms);
        let s = stored.schedule;
        let (cron, zone, every_ms) = match s.when {
            When::Cron { expression, zone } => (Some(expression), Some(zone), None),
            When::Every { every_ms, .. } => (None, None, Some(every_ms as f64)),
        };
        ScheduleInfo {
            name: s.name,
            topic: s.topic,
            cron,
            zone,
            every_ms,
            misfire: s.misfire.name().to_string(),
            misfire_cap: match s.misfire {
                Misfire::All { cap } => Some(cap),
                _ => None,
            },
            paused: stored.paused,
            start: s.start.map(ms),
            end: s.end.map(ms),
            last_run: stored.last_tick.map(ms),
            next_run,
            last_message_id: stored.last_message_id,
        }
    }
}

fn upserted(u: Upserted) -> String {
    match u {
        Upserted::Created => "created",
        Upserted::Updated => "updated",
        Upserted::Unchanged => "unchanged",
    }
    .to_string()
}

#[napi]
impl Broker {
    #[napi]
    pub async fn upsert_schedule(
        &self,
        name: String,
        topic: String,
        payload: Buffer,
        options: ScheduleOptions,
    ) -> Result<String> {
        let schedule = options.to_core(&name, &topic, &payload)?;
        self.schedule_store()?.upsert(&schedule).await.map(upserted).or_throw()
    }

    #[napi]
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let found = self.schedule_store()?.list().await.or_throw()?;
        Ok(found.into_iter().map(ScheduleInfo::from).collect())
    }

    #[napi]
    pub async fn pause_schedule(&self, name: String) -> Result<bool> {
        self.schedule_store()?.set_paused(&name, true).await.or_throw()
    }

    #[napi]
    pub async fn resume_schedule(&self, name: String) -> Result<bool> {
        self.schedule_store()?.set_paused(&name, false).await.or_throw()
    }

    #[napi]
    pub async fn run_schedule_now(&self, name: String) -> Result<Option<String>> {
        Scheduler::run_now(self.core().as_ref(), &name).await.or_throw()
    }

    #[napi]
    pub async fn remove_schedule(&self, name: String) -> Result<bool> {
        self.schedule_store()?.remove(&name).await.or_throw()
    }
}

/// Publishes the due ticks of the broker's schedules, each once however
/// many schedulers run.
#[napi(js_name = "Scheduler")]
pub struct JsScheduler {
    scheduler: Scheduler,
}

#[napi]
impl JsScheduler {
    #[napi(constructor)]
    pub fn new(broker: &Broker) -> Result<Self> {
        Ok(JsScheduler { scheduler: Scheduler::for_broker(broker.core()).or_throw()? })
    }

    /// Runs until `shutdown`.
    #[napi]
    pub async fn run(&self) -> Result<()> {
        self.scheduler.run().await.or_throw()
    }

    #[napi]
    pub fn shutdown(&self) {
        self.scheduler.shutdown();
    }
}
