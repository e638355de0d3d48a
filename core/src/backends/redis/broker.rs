//! The Redis `Broker`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Value};

use super::idempotency::RedisIdempotencyStore;
use super::{err, scripts, TopicKeys, BACKEND};
use crate::broker::{
    validate_batch, validate_raw, Broker, Capabilities, ConsumerInfo, Delivery, GroupStats, Receipt, ReceiveRequest,
};
use crate::dead_letter::{self, DeadLetter, DeadLetterReason};
use crate::error::{Error, Result};
use crate::idempotency::IdempotencyStore;
use crate::message::{from_millis, to_millis, validate_name, Message};
use crate::url::BrokerUrl;
use crate::wire;

/// Field holding the payload in a stream entry.
const PAYLOAD: &str = "payload";
/// Longest a single blocking read may take (sets the blocking connections' timeout).
const MAX_BLOCK: Duration = Duration::from_secs(5);
/// Entries moved per mover run.
const MOVE_LIMIT: u32 = 1000;
/// How often a busy consumer runs the mover and looks at its due stream
/// (an idle one does it on every wake-up). Bounds how late a due retry,
/// or a message handed back by another process, can be picked up.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Longest block on the topic stream while the due stream goes unwatched.
const MAX_BLIND_BLOCK: Duration = Duration::from_millis(250);

/// What one handle knows of a group's waiting messages.
#[derive(Debug)]
struct GroupState {
    last_move: Option<Instant>,
    /// Next due time (ms) of a waiting retry or delayed publish; -1: none.
    next_due: i64,
    last_due_read: Option<Instant>,
    /// The last due-stream read was full: read it again next time.
    due_hot: bool,
}

impl Default for GroupState {
    fn default() -> Self {
        GroupState { last_move: None, next_due: -1, last_due_read: None, due_hot: false }
    }
}

const KNOWN_PARAMS: &[&str] = &[
    "max_message_bytes",
    "max_len",
    "response_timeout_ms",
    "connect_timeout_ms",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
];

#[derive(Clone, Debug)]
struct Options {
    max_message_bytes: usize,
    max_len: Option<u64>,
    response_timeout: Duration,
    connect_timeout: Duration,
}

impl Options {
    fn from_url(url: &BrokerUrl) -> Result<Self> {
        url.reject_unknown_params(KNOWN_PARAMS)?;
        let max_message_bytes = url.max_message_bytes(512 * 1024 * 1024)?;
        let max_len = url.param_u64("max_len")?;
        if max_len == Some(0) {
            return Err(Error::invalid_option("max_len", "must be at least 1"));
        }
        Ok(Options {
            max_message_bytes,
            max_len,
            response_timeout: url.param_millis("response_timeout_ms")?.unwrap_or(Duration::from_secs(10)),
            connect_timeout: url.param_millis("connect_timeout_ms")?.unwrap_or(Duration::from_secs(5)),
        })
    }
}

/// TLS material from `tls_ca_file` (trust this CA instead of the system's)
/// and `tls_cert_file` + `tls_key_file` (a client certificate), for rediss://.
fn tls_certificates(url: &BrokerUrl) -> Result<Option<redis::TlsCertificates>> {
    let read = |name: &str| -> Result<Option<Vec<u8>>> {
        url.param(name)
            .map(|path| {
                std::fs::read(path).map_err(|e| Error::invalid_option(name, format!("cannot read `{path}`: {e}")))
            })
            .transpose()
    };
    let (ca, cert, key) = (read("tls_ca_file")?, read("tls_cert_file")?, read("tls_key_file")?);
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    if url.scheme() != "rediss" {
        return Err(Error::invalid_option("tls_ca_file", "TLS options need a rediss:// URL"));
    }
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
        (None, None) => None,
        _ => return Err(Error::invalid_option("tls_cert_file", "tls_cert_file and tls_key_file go together")),
    };
    Ok(Some(redis::TlsCertificates { client_tls, root_cert: ca }))
}

/// Which entry a delivery holds.
#[derive(Debug)]
struct RedisReceipt {
    /// From the group's due stream (else the topic stream).
    due: bool,
    id: String,
    consumer: Arc<str>,
}

/// A read's topic, group and consumer names, shared by the deliveries it
/// makes rather than copied into each.
struct Names {
    topic: Arc<str>,
    group: Arc<str>,
    consumer: Arc<str>,
}

impl Names {
    fn of(req: &ReceiveRequest<'_>) -> Names {
        Names { topic: req.topic.into(), group: req.group.into(), consumer: req.consumer.into() }
    }
}

/// A Redis connection for one URL.
pub struct RedisBroker {
    client: redis::Client,
    conn: ConnectionManager,
    /// Connections for blocking reads, which must not hold up other commands.
    blocking: Mutex<Vec<MultiplexedConnection>>,
    options: Options,
    url: String,
    groups_ready: Mutex<HashSet<(String, String)>>,
    last_claim: Mutex<HashMap<(String, String), Instant>>,
    group_state: Mutex<HashMap<(String, String), GroupState>>,
    last_trim: Mutex<HashMap<String, Instant>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker").field("url", &self.url).finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects to `redis://` or `rediss://`.
    pub async fn connect(url: &BrokerUrl) -> Result<Self> {
        let options = Options::from_url(url)?;
        let mut parsed = url.as_url()?;
        parsed.set_query(None); // our options are not the client's
        let invalid = |e: redis::RedisError| Error::InvalidUrl { url: url.redacted(), reason: e.to_string() };
        let client = match tls_certificates(url)? {
            Some(certs) => redis::Client::build_with_tls(parsed.as_str(), certs).map_err(invalid)?,
            None => redis::Client::open(parsed.as_str()).map_err(invalid)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_with_config(config).await.map_err(|e| Error::Connect {
            backend: BACKEND,
            url: url.redacted(),
            reason: e.to_string(),
        })?;
        Ok(RedisBroker {
            client,
            conn,
            blocking: Mutex::new(Vec::new()),
            options,
            url: url.redacted(),
            groups_ready: Mutex::new(HashSet::new()),
            last_claim: Mutex::new(HashMap::new()),
            group_state: Mutex::new(HashMap::new()),
            last_trim: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn blocking_conn(&self) -> Result<MultiplexedConnection> {
        if let Some(c) = self.blocking.lock().unwrap().pop() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(MAX_BLOCK + self.options.response_timeout));
        self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| Error::Connect {
            backend: BACKEND,
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }

    async fn create_group(&self, keys: &TopicKeys, topic: &str, group: &str) -> Result<()> {
        let mut conn = self.conn();
        for stream in [keys.stream.clone(), keys.due(group)] {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(err(e)),
            }
        }
        self.groups_ready.lock().unwrap().insert((topic.to_string(), group.to_string()));
        Ok(())
    }

    async fn group_ready(&self, keys: &TopicKeys, topic: &str, group: &str) -> Result<()> {
        if self.groups_ready.lock().unwrap().contains(&(topic.to_string(), group.to_string())) {
            return Ok(());
        }
        self.create_group(keys, topic, group).await
    }

    /// Claims entries of this group whose lease (idle time) expired.
    async fn claim_expired(&self, keys: &TopicKeys, req: &ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        let key = (req.topic.to_string(), req.group.to_string());
        {
            let mut last = self.last_claim.lock().unwrap();
            let now = Instant::now();
            // Scanning the pending list is not free: a few times per lease is enough.
            let every = (req.lease / 4).max(Duration::from_millis(25));
            if last.get(&key).is_some_and(|t| now.duration_since(*t) < every) {
                return Ok(Vec::new());
            }
            last.insert(key, now);
        }
        let mut conn = self.conn();
        let mut out = Vec::new();
        for (stream, due) in [(keys.stream.clone(), false), (keys.due(req.group), true)] {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(req.group)
                .arg(req.consumer)
                .arg(req.lease.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(req.max - out.len())
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            let entries = match reply {
                Value::Array(mut parts) if parts.len() >= 2 => into_entries(parts.swap_remove(1)),
                _ => Vec::new(),
            };
            if entries.is_empty() {
                continue;
            }
            // The claim raised each delivery count; read them back.
            let mut pipe = redis::pipe();
            for (id, _) in &entries {
                pipe.cmd("XPENDING").arg(&stream).arg(req.group).arg(id).arg(id).arg(1);
            }
            let pending: Vec<Value> = pipe.query_async(&mut conn).await.map_err(err)?;
            let names = Names::of(req);
            for ((id, fields), p) in entries.into_iter().zip(pending) {
                let Some(fields) = fields else { continue };
                let count = pending_count(&p).unwrap_or(2);
                out.push(self.delivery(&names, due, id, fields, count));
            }
            if out.len() >= req.max {
                break;
            }
        }
        Ok(out)
    }

    fn delivery(&self, names: &Names, due: bool, id: String, fields: Vec<(String, Vec<u8>)>, count: u32) -> Delivery {
        let (headers, payload) = split_fields(fields);
        let mut decoded = wire::decode(headers, payload, count);
        if decoded.message.published_at == SystemTime::UNIX_EPOCH {
            decoded.message.published_at = id_time(&id);
        }
        Delivery::new(
            Arc::clone(&names.topic),
            Arc::clone(&names.group),
            decoded.message,
            decoded.malformed,
            Receipt::new(RedisReceipt { due, id, consumer: Arc::clone(&names.consumer) }),
        )
    }

    /// Reads entries never delivered to the group: first the group's due
    /// stream (retries and redriven messages) when `read_due`, then the
    /// topic stream, blocking on the latter only. Never more than `max`.
    async fn read_new(
        &self,
        keys: &TopicKeys,
        req: &ReceiveRequest<'_>,
        max: usize,
        block: Option<Duration>,
        read_due: bool,
    ) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        if read_due {
            out = self.read_stream(req, &keys.due(req.group), true, max, None).await?;
            let mut states = self.group_state.lock().unwrap();
            let state = states.entry((req.topic.to_string(), req.group.to_string())).or_default();
            state.last_due_read = Some(Instant::now());
            state.due_hot = out.len() == max;
        }
        if out.len() < max {
            let block = if out.is_empty() { block } else { None };
            out.extend(self.read_stream(req, &keys.stream, false, max - out.len(), block).await?);
        }
        Ok(out)
    }

    async fn read_stream(
        &self,
        req: &ReceiveRequest<'_>,
        stream: &str,
        due: bool,
        max: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(req.group).arg(req.consumer).arg("COUNT").arg(max);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(stream).arg(">");
        let reply: Value = if block.is_some() {
            let mut conn = self.blocking_conn().await?;
            let reply = cmd.query_async(&mut conn).await;
            if reply.is_ok() {
                self.blocking.lock().unwrap().push(conn);
            }
            reply
        } else {
            cmd.query_async(&mut self.conn()).await
        }
        .map_err(|e| {
            if e.code() == Some("NOGROUP") {
                self.groups_ready.lock().unwrap().remove(&(req.topic.to_string(), req.group.to_string()));
            }
            err(e)
        })?;
        let mut out = Vec::new();
        let names = Names::of(req);
        for (_, entries) in parse_read_reply(reply) {
            for (id, fields) in entries {
                if let Some(fields) = fields {
                    out.push(self.delivery(&names, due, id, fields, 1));
                }
            }
        }
        Ok(out)
    }

    /// Trims entries of the topic stream that every group has acked, at most once a second.
    async fn trim_consumed(&self, topic: &str, force: bool) -> Result<()> {
        {
            let mut last = self.last_trim.lock().unwrap();
            let now = Instant::now();
            if !force && last.get(topic).is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1)) {
                return Ok(());
            }
            last.insert(topic.to_string(), now);
        }
        let keys = TopicKeys::new(topic);
        let mut conn = self.conn();
        let groups = xinfo_groups(&mut conn, &keys.stream).await?;
        if groups.is_empty() {
            return Ok(()); // kept for the first group to come
        }
        let mut safe: Option<(u64, u64)> = None;
        for g in &groups {
            let bound = if g.pending > 0 {
                let summary: Value =
                    redis::cmd("XPENDING").arg(&keys.stream).arg(&g.name).query_async(&mut conn).await.map_err(err)?;
                match &summary {
                    Value::Array(parts) if parts.len() >= 2 => string(&parts[1]).and_then(|s| parse_id(&s)),
                    _ => None,
                }
            } else {
                parse_id(&g.last_delivered).map(|(ms, seq)| (ms, seq + 1))
            };
            let Some(bound) = bound else { return Ok(()) };
            safe = Some(safe.map_or(bound, |s| s.min(bound)));
        }
        if let Some((ms, seq)) = safe {
            if (ms, seq) > (0, 1) {
                redis::cmd("XTRIM")
                    .arg(&keys.stream)
                    .arg("MINID")
                    .arg(format!("{ms}-{seq}"))
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    fn receipts<'a>(&self, deliveries: &'a [Delivery]) -> Result<Vec<&'a RedisReceipt>> {
        deliveries.iter().map(|d| d.receipt_as::<RedisReceipt>(BACKEND)).collect()
    }
}

/// Appends a message's stream fields (its wire headers, then the payload),
/// straight from the message: no header strings in between.
fn add_message<C: FieldArgs>(cmd: &mut C, m: &Message) {
    wire::visit_headers(m, |name, value| cmd.field(name.as_bytes(), value.as_bytes()));
    cmd.field(PAYLOAD.as_bytes(), &m.payload);
}

/// Commands and script invocations both take field arguments.
trait FieldArgs {
    fn field(&mut self, name: &[u8], value: &[u8]);
}

impl FieldArgs for redis::Cmd {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.arg(name).arg(value);
    }
}

impl FieldArgs for redis::ScriptInvocation<'_> {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.arg(name).arg(value);
    }
}

fn split_fields(fields: Vec<(String, Vec<u8>)>) -> (Vec<(String, String)>, Bytes) {
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

fn string(v: &Value) -> Option<String> {
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

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn id_time(id: &str) -> SystemTime {
    parse_id(id).map(|(ms, _)| from_millis(ms)).unwrap_or_else(SystemTime::now)
}

/// `[[id, [f, v, f, v...]], ...]`; fields are `None` for deleted entries.
type Entry = (String, Option<Vec<(String, Vec<u8>)>>);

fn parse_entries(v: &Value) -> Vec<Entry> {
    into_entries(v.clone())
}

/// Like [`parse_entries`], consuming the reply so payloads are moved, not copied.
fn into_entries(v: Value) -> Vec<Entry> {
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
fn parse_read_reply(v: Value) -> Vec<(String, Vec<Entry>)> {
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
fn pending_count(v: &Value) -> Option<u32> {
    let Value::Array(rows) = v else { return None };
    let Value::Array(row) = rows.first()? else { return None };
    int(row.get(3)?).map(|n| n as u32)
}

struct GroupInfo {
    name: String,
    pending: u64,
    last_delivered: String,
    lag: Option<u64>,
}

async fn xinfo_groups(conn: &mut ConnectionManager, stream: &str) -> Result<Vec<GroupInfo>> {
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
async fn xinfo_consumers(conn: &mut ConnectionManager, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
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

fn now_ms() -> u64 {
    to_millis(SystemTime::now())
}

#[async_trait]
impl Broker for RedisBroker {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_bytes: self.options.max_message_bytes,
            delayed_delivery: true,
            ordered_delivery: true,
            replay_for_new_groups: true,
            leases: true,
            pushes_ahead: false,
            owned_partitions: false,
            oldest_age: true,
            stats_delay: Duration::ZERO,
        }
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        self.check_open()?;
        validate_name("topic", topic)?;
        validate_name("group", group)?;
        self.create_group(&TopicKeys::new(topic), topic, group).await
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_open()?;
        validate_batch(topic, &messages, &self.capabilities())?;
        if messages.iter().any(|m| m.headers.contains_key(PAYLOAD)) {
            return Err(Error::InvalidMessage(format!("header `{PAYLOAD}` is reserved on Redis for the payload")));
        }
        if messages.is_empty() {
            return Ok(());
        }
        let keys = TopicKeys::new(topic);
        let mut conn = self.conn();
        if let Some(limit) = self.options.max_len {
            let len: u64 = redis::cmd("XLEN").arg(&keys.stream).query_async(&mut conn).await.map_err(err)?;
            if len + messages.len() as u64 > limit {
                self.trim_consumed(topic, true).await?;
                let len: u64 = redis::cmd("XLEN").arg(&keys.stream).query_async(&mut conn).await.map_err(err)?;
                if len + messages.len() as u64 > limit {
                    return Err(Error::QueueFull { topic: topic.to_string(), limit });
                }
            }
        }
        let now = now_ms();
        let delayed = messages.iter().any(|m| m.deliver_at.is_some_and(|t| to_millis(t) > now));
        if delayed {
            // The pipeline below calls the script by hash: make sure the server has it.
            scripts::publish_delayed().load_async(&mut conn).await.map_err(err)?;
        }
        let mut pipe = redis::Pipeline::with_capacity(messages.len());
        for m in &messages {
            let due = to_millis(m.due_at());
            // Sized up front: growing each command's buffer argument by
            // argument took an eighth of the publishing time.
            let fields = 2 * (6 + m.headers.len()) + 2;
            let bytes = wire::encoded_headers_len(m)
                + PAYLOAD.len()
                + m.payload.len()
                + keys.delay_data.len().max(keys.stream.len())
                + keys.delay.len()
                + 64;
            let mut cmd = if due > now {
                let mut c = redis::Cmd::with_capacity(fields + 6, bytes);
                c.arg("EVALSHA");
                c.arg(scripts::publish_delayed().get_hash()).arg(2).arg(&keys.delay_data).arg(&keys.delay).arg(due);
                c
            } else {
                let mut c = redis::Cmd::with_capacity(fields + 3, bytes);
                c.arg("XADD").arg(&keys.stream).arg("*");
                c
            };
            add_message(&mut cmd, m);
            pipe.add_command(cmd);
        }
        pipe.query_async::<Vec<Value>>(&mut conn).await.map_err(err)?;
        Ok(())
    }

    async fn publish_raw(&self, topic: &str, headers: Vec<(String, String)>, payload: Bytes) -> Result<()> {
        self.check_open()?;
        validate_raw(topic, &headers, &payload, self.options.max_message_bytes)?;
        let keys = TopicKeys::new(topic);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&keys.stream).arg("*");
        for (k, v) in &headers {
            cmd.arg(k).arg(v);
        }
        cmd.arg(PAYLOAD).arg(&payload[..]);
        cmd.query_async::<String>(&mut self.conn()).await.map_err(err)?;
        Ok(())
    }

    async fn receive(&self, req: ReceiveRequest<'_>) -> Result<Vec<Delivery>> {
        self.check_open()?;
        validate_name("topic", req.topic)?;
        validate_name("group", req.group)?;
        if req.max == 0 {
            return Ok(Vec::new());
        }
        let keys = TopicKeys::new(req.topic);
        let deadline = Instant::now() + req.wait;
        // Set after a blocking read that found nothing: an idle consumer
        // looks at its due stream on every wake-up, a busy one every
        // CHECK_EVERY (not on every receive: that doubled the reads).
        let mut woke_idle = false;
        loop {
            self.group_ready(&keys, req.topic, req.group).await?;
            let group_key = (req.topic.to_string(), req.group.to_string());
            let (move_now, mut read_due, mut next_due) = {
                let mut states = self.group_state.lock().unwrap();
                let st = states.entry(group_key.clone()).or_default();
                let due_passed = st.next_due >= 0 && st.next_due as u64 <= now_ms();
                (
                    due_passed || st.last_move.is_none_or(|t| t.elapsed() >= CHECK_EVERY),
                    st.due_hot || st.last_due_read.is_none_or(|t| t.elapsed() >= CHECK_EVERY),
                    st.next_due,
                )
            };
            if move_now {
                let (moved, next): (i64, i64) = scripts::mover()
                    .key(&keys.delay)
                    .key(&keys.delay_data)
                    .key(&keys.stream)
                    .key(keys.retry(req.group))
                    .key(keys.park(req.group))
                    .key(keys.due(req.group))
                    .arg(now_ms())
                    .arg(MOVE_LIMIT)
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(err)?;
                let mut states = self.group_state.lock().unwrap();
                let st = states.entry(group_key).or_default();
                st.last_move = Some(Instant::now());
                st.next_due = next;
                next_due = next;
                read_due |= moved > 0;
            }
            let mut out = self.claim_expired(&keys, &req).await?;
            if out.len() < req.max {
                let now = Instant::now();
                let mut block = None;
                if out.is_empty() && now < deadline {
                    let mut b = (deadline - now).min(MAX_BLIND_BLOCK);
                    if next_due >= 0 {
                        b = b.min(Duration::from_millis((next_due as u64).saturating_sub(now_ms()).max(1)));
                    }
                    // Wake up to claim expired leases of dead consumers, too.
                    b = b.min((req.lease / 2).max(Duration::from_millis(50)));
                    block = Some(b);
                }
                read_due |= woke_idle;
                let max = req.max - out.len();
                out.extend(self.read_new(&keys, &req, max, block, read_due).await?);
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            woke_idle = true;
            self.check_open()?;
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.check_open()?;
        // One script call per topic and group (a worker's batch has one of each).
        let mut batches: HashMap<(&str, &str), Vec<(&Delivery, &RedisReceipt)>> = HashMap::new();
        for (d, r) in deliveries.iter().zip(self.receipts(deliveries)?) {
            batches.entry((&*d.topic, &*d.group)).or_default().push((d, r));
        }
        let mut lost: Option<Error> = None;
        let mut topics = HashSet::new();
        for ((topic, group), batch) in batches {
            let keys = TopicKeys::new(topic);
            let (due, fresh): (Vec<_>, Vec<_>) = batch.iter().partition(|(_, r)| r.due);
            let mut inv = scripts::ack().key(&keys.stream);
            inv.key(keys.due(group)).arg(group).arg(fresh.len());
            for (_, r) in fresh.iter().chain(&due) {
                inv.arg(&r.id);
            }
            let acked: usize = inv.invoke_async(&mut self.conn()).await.map_err(err)?;
            if acked < batch.len() && lost.is_none() {
                // Which ones were settled already, one XACK for the batch cannot tell.
                lost = Some(match batch.as_slice() {
                    [(d, _)] => Error::lease_lost(&d.message.id),
                    _ => Error::leases_lost(batch.len() - acked),
                });
            }
            topics.insert(topic);
        }
        for topic in topics {
            if let Err(e) = self.trim_consumed(topic, false).await {
                tracing::debug!(error = %e, "trimming consumed entries failed; will try again");
            }
        }
        lost.map_or(Ok(()), Err)
    }

    async fn extend_leases(&self, deliveries: &[Delivery], _lease: Duration) -> Result<()> {
        self.check_open()?;
        let mut batches: HashMap<(&str, &str, &str), Vec<&RedisReceipt>> = HashMap::new();
        for (d, r) in deliveries.iter().zip(self.receipts(deliveries)?) {
            batches.entry((&*d.topic, &*d.group, &*r.consumer)).or_default().push(r);
        }
        for ((topic, group, consumer), receipts) in batches {
            let keys = TopicKeys::new(topic);
            let mut inv = scripts::extend().key(&keys.stream);
            inv.key(keys.due(group)).arg(group).arg(consumer);
            for r in &receipts {
                inv.arg(if r.due { "d" } else { "s" }).arg(&r.id);
            }
            inv.invoke_async::<i64>(&mut self.conn()).await.map_err(err)?;
        }
        Ok(())
    }

    async fn retry(&self, delivery: &Delivery, next: Message) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<RedisReceipt>(BACKEND)?;
        let keys = TopicKeys::new(&delivery.topic);
        let group = &*delivery.group;
        let source = if r.due { keys.due(group) } else { keys.stream.clone() };
        let due = to_millis(next.due_at());
        let mut inv = scripts::retry().key(&source);
        inv.key(keys.park(group)).key(keys.retry(group)).key(keys.due(group));
        inv.arg(group).arg(&*r.consumer).arg(&r.id).arg(due).arg(now_ms()).arg(if r.due { "1" } else { "0" });
        add_message(&mut inv, &next);
        let done: i64 = inv.invoke_async(&mut self.conn()).await.map_err(err)?;
        if done == 0 {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.check_open()?;
        let r = delivery.receipt_as::<RedisReceipt>(BACKEND)?;
        let keys = TopicKeys::new(&delivery.topic);
        let group = &*delivery.group;
        let source = if r.due { keys.due(group) } else { keys.stream.clone() };
        let mut inv = scripts::dead_letter().key(&source);
        inv.key(keys.dlq(group)).arg(group).arg(&*r.consumer).arg(&r.id).arg(if r.due { "1" } else { "0" });
        add_message(&mut inv, &delivery.message);
        for (name, value) in wire::encode_reason(reason) {
            inv.field(name.as_bytes(), value.as_bytes());
        }
        let done: i64 = inv.invoke_async(&mut self.conn()).await.map_err(err)?;
        if done == 0 {
            return Err(Error::lease_lost(&delivery.message.id));
        }
        Ok(())
    }

    async fn consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.check_open()?;
        validate_name("topic", topic)?;
        validate_name("group", group)?;
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

    async fn inspect(&self, topic: &str, group: &str) -> Result<GroupStats> {
        self.check_open()?;
        validate_name("topic", topic)?;
        validate_name("group", group)?;
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
                None => {
                    // Redis could not tell (after deletions): count what is after the group's position.
                    let after: Value = redis::cmd("XRANGE")
                        .arg(&stream)
                        .arg(format!("({}", g.last_delivered))
                        .arg("+")
                        .query_async(&mut conn)
                        .await
                        .map_err(err)?;
                    parse_entries(&after).len() as u64
                }
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

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.check_open()?;
        let keys = TopicKeys::new(topic);
        let mut names: Vec<String> =
            xinfo_groups(&mut self.conn(), &keys.stream).await?.into_iter().map(|g| g.name).collect();
        names.sort();
        Ok(names)
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.check_open()?;
        let keys = TopicKeys::new(topic);
        let start = match after {
            Some(id) => {
                parse_id(id).ok_or_else(|| Error::invalid_option("after", format!("not a dead-letter id: `{id}`")))?;
                format!("({id}")
            }
            None => "-".to_string(),
        };
        let reply: Value = redis::cmd("XRANGE")
            .arg(keys.dlq(group))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(parse_entries(&reply)
            .into_iter()
            .filter_map(|(id, fields)| {
                let (headers, payload) = split_fields(fields?);
                let message = wire::decode(headers, payload, 1).message;
                let dead_at = id_time(&id);
                Some(dead_letter::from_stored(id, message, topic, group, dead_at))
            })
            .collect())
    }

    async fn redrive_dead_letters(&self, topic: &str, group: &str, ids: &[String]) -> Result<usize> {
        self.check_open()?;
        let keys = TopicKeys::new(topic);
        self.group_ready(&keys, topic, group).await?;
        let mut conn = self.conn();
        let mut moved = 0;
        for id in ids {
            parse_id(id).ok_or_else(|| Error::invalid_option("ids", format!("not a dead-letter id: `{id}`")))?;
            let reply: Value =
                redis::cmd("XRANGE").arg(keys.dlq(group)).arg(id).arg(id).query_async(&mut conn).await.map_err(err)?;
            let Some((_, Some(fields))) = parse_entries(&reply).into_iter().next() else { continue };
            let (headers, payload) = split_fields(fields);
            let message = dead_letter::redriven(wire::decode(headers, payload, 1).message);
            let mut inv = scripts::redrive().key(keys.dlq(group));
            inv.key(keys.due(group)).arg(id);
            add_message(&mut inv, &message);
            let done: i64 = inv.invoke_async(&mut conn).await.map_err(err)?;
            moved += done as usize;
        }
        Ok(moved)
    }

    async fn purge_dead_letters(&self, topic: &str, group: &str, ids: Option<&[String]>) -> Result<usize> {
        self.check_open()?;
        let keys = TopicKeys::new(topic);
        let mut conn = self.conn();
        match ids {
            None => {
                let (len, _): (usize, i64) = redis::pipe()
                    .atomic()
                    .cmd("XLEN")
                    .arg(keys.dlq(group))
                    .cmd("DEL")
                    .arg(keys.dlq(group))
                    .query_async(&mut conn)
                    .await
                    .map_err(err)?;
                Ok(len)
            }
            Some([]) => Ok(0),
            Some(ids) => {
                let n: usize =
                    redis::cmd("XDEL").arg(keys.dlq(group)).arg(ids).query_async(&mut conn).await.map_err(err)?;
                Ok(n)
            }
        }
    }

    fn idempotency_store(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(RedisIdempotencyStore::new(self.conn())))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.blocking.lock().unwrap().clear();
        Ok(())
    }
}
