//! Lua scripts: each settles a delivery atomically on the server.
//!
//! Every script that settles a delivery first checks that the consumer
//! still owns it in the group's pending entries list; a consumer whose lease
//! expired (and whose entry was claimed by another) changes nothing.
//! All keys of a topic share one hash tag, so the scripts run on Redis
//! Cluster too.

use std::sync::OnceLock;

use redis::Script;

const OWNS: &str = r#"
local function owns(stream, group, id, consumer)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  return #p > 0 and p[1][2] == consumer
end
"#;

fn with_owns(body: &str) -> Script {
    Script::new(&format!("{OWNS}\n{body}"))
}

/// Moves due delayed publishes into the topic stream and due retries into
/// the group's due stream. Returns `{moved, next due time in ms or -1}`.
/// KEYS: delay zset, delay data, topic stream, retry zset, park stream, due stream.
/// ARGV: now ms, limit.
pub(super) fn mover() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local moved = 0
local function move(z, data, target)
  local ids = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local e = redis.call('XRANGE', data, id, id)
    if #e > 0 then redis.call('XADD', target, '*', unpack(e[1][2])) end
    redis.call('XDEL', data, id)
    redis.call('ZREM', z, id)
    moved = moved + 1
  end
end
move(KEYS[1], KEYS[2], KEYS[3])
move(KEYS[4], KEYS[5], KEYS[6])
local nxt = -1
for _, z in ipairs({KEYS[1], KEYS[4]}) do
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if #first > 0 then
    local s = tonumber(first[2])
    if nxt < 0 or s < nxt then nxt = s end
  end
end
return {moved, nxt}
"#,
        )
    })
}

/// Publishes one delayed message: parks its fields and schedules it.
/// KEYS: delay data, delay zset. ARGV: due ms, fields...
pub(super) fn publish_delayed() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], ARGV[1], id)
return id
"#,
        )
    })
}

/// Acks deliveries still pending in the group; entries of the group's own
/// due stream are deleted too. Returns how many were still pending (the
/// others were settled already). One XACK per stream for the whole batch:
/// a call per id cost four times the ack itself. No ownership check here,
/// unlike retry and dead-letter: if our lease expired and another consumer
/// claimed the entry, the work is done all the same, and acking it is what
/// saves the other consumer's copy from counting as a failure.
/// KEYS: topic stream, due stream. ARGV: group, the number of topic stream
/// ids, those ids, then the due stream ids.
pub(super) fn ack() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local n = tonumber(ARGV[2])
local acked = 0
if n > 0 then
  acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3, 2 + n))
end
if #ARGV > 2 + n then
  acked = acked + redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, 3 + n))
  redis.call('XDEL', KEYS[2], unpack(ARGV, 3 + n))
end
return acked
"#,
        )
    })
}

/// Resets the idle time of deliveries the consumer owns (its lease).
/// KEYS: topic stream, due stream. ARGV: group, consumer, pairs (`s`|`d`, id).
pub(super) fn extend() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        with_owns(
            r#"
local n = 0
for i = 3, #ARGV, 2 do
  local key = KEYS[1]
  if ARGV[i] == 'd' then key = KEYS[2] end
  if owns(key, ARGV[1], ARGV[i + 1], ARGV[2]) then
    redis.call('XCLAIM', key, ARGV[1], ARGV[2], 0, ARGV[i + 1], 'JUSTID')
    n = n + 1
  end
end
return n
"#,
        )
    })
}

/// Settles a delivery and stores its next copy for this group: straight
/// into the due stream when already due, else parked until its time.
/// KEYS: source stream, park stream, retry zset, due stream.
/// ARGV: group, consumer, id, due ms, now ms, source is due stream (1/0), fields...
pub(super) fn retry() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        with_owns(
            r#"
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
if tonumber(ARGV[4]) <= tonumber(ARGV[5]) then
  redis.call('XADD', KEYS[4], '*', unpack(ARGV, 7))
else
  local pid = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 7))
  redis.call('ZADD', KEYS[3], ARGV[4], pid)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[6] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
return 1
"#,
        )
    })
}

/// Settles a delivery by moving it to the group's dead letters.
/// KEYS: source stream, dead-letter stream.
/// ARGV: group, consumer, id, source is due stream (1/0), fields...
pub(super) fn dead_letter() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        with_owns(
            r#"
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
return 1
"#,
        )
    })
}

/// Moves one dead letter back to its group's due stream, with rewritten fields.
/// KEYS: dead-letter stream, due stream. ARGV: id, fields...
pub(super) fn redrive() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1
"#,
        )
    })
}

/// Counts up to a page of a stream's entries after an id, in Redis: an
/// inspection whose lag Redis cannot tell then moves two numbers, not the
/// entries. KEYS: stream. ARGV: after (exclusive), page size.
/// Returns `{counted, last id counted}`.
pub(super) fn count_after() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local e = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
if #e == 0 then return {0, ARGV[1]} end
return {#e, e[#e][1]}
"#,
        )
    })
}

/// Idempotency claim. KEYS: key. ARGV: owner, lease ms.
/// Returns 1 acquired, 2 already done, 3 busy.
pub(super) fn claim() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local v = redis.call('GET', KEYS[1])
if v == 'done' then return 2 end
if v and v ~= ('held:' .. ARGV[1]) then return 3 end
redis.call('SET', KEYS[1], 'held:' .. ARGV[1], 'PX', ARGV[2])
return 1
"#,
        )
    })
}

/// Idempotency lease renewal. KEYS: key. ARGV: owner, lease ms. Returns 1 if renewed.
pub(super) fn renew() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
if redis.call('GET', KEYS[1]) == ('held:' .. ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
        )
    })
}

/// Idempotency release. KEYS: key. ARGV: owner.
pub(super) fn release_claim() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
if redis.call('GET', KEYS[1]) == ('held:' .. ARGV[1]) then
  redis.call('DEL', KEYS[1])
end
return 1
"#,
        )
    })
}
