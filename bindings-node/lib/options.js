'use strict'
/**
 * The options each public call takes, and what each may hold. Every call
 * checks its options here, before anything crosses to the addon: an unknown
 * name is refused with `INVALID_OPTION` naming it (and the closest known
 * name), never ignored (`{ concurency: 4 }` silently running at
 * concurrency 1 is the bug this prevents); a value of the wrong type or out
 * of range is refused with `INVALID_OPTION` saying what is allowed, never
 * a conversion error of the addon's. Ranges that depend on several values
 * (a multiplier of at least 1, a jitter in 0..1) are the core's to check.
 */

const { invalidOption } = require('./errors.js')

const U32 = 0xffffffff

/** What an option may hold: `check(value)` returns why not, or nothing. */
const kind = {
  count: (min) => (v) =>
    Number.isInteger(v) && v >= min && v <= U32 ? undefined : `must be a whole number from ${min} to ${U32}`,
  durationMs: (v) =>
    typeof v === 'number' && Number.isFinite(v) && v >= 0 ? undefined : 'must be a non-negative, finite number of milliseconds',
  number: (v) => (typeof v === 'number' && Number.isFinite(v) ? undefined : 'must be a finite number'),
  positive: (v) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? undefined : 'must be a positive, finite number'),
  string: (v) => (typeof v === 'string' ? undefined : 'must be a string'),
  date: (v) => (v instanceof Date && !Number.isNaN(v.getTime()) ? undefined : 'must be a valid Date'),
  object: (v) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? undefined : 'must be an object'),
  function: (v) => (typeof v === 'function' ? undefined : 'must be a function'),
  classes: (v) =>
    Array.isArray(v) && v.every((c) => typeof c === 'function') ? undefined : 'must be an array of error classes',
  strings: (v) => (Array.isArray(v) && v.every((s) => typeof s === 'string') ? undefined : 'must be an array of strings'),
  oneOf: (allowed) => (v) => (allowed.includes(v) ? undefined : `must be one of ${allowed.join(', ')}`),
  // Checked where it is used (headers: INVALID_MESSAGE; payload: a TypeError).
  any: () => undefined,
}

const RETRY = {
  maxRetries: kind.count(0),
  initialDelayMs: kind.durationMs,
  multiplier: kind.number,
  maxDelayMs: kind.durationMs,
  jitter: kind.number,
}
const WORKER = {
  concurrency: kind.count(1),
  prefetch: kind.count(0),
  retry: kind.object,
  handlerTimeoutMs: kind.durationMs,
  leaseMs: kind.durationMs,
  pollWaitMs: kind.durationMs,
  shutdownGraceMs: kind.durationMs,
  idempotencyStore: kind.string,
  idempotencyRetentionMs: kind.durationMs,
  busyKeyDelayMs: kind.durationMs,
  consumerName: kind.string,
  retryFor: kind.classes,
  fatalFor: kind.classes,
}
const PUBLISH = {
  key: kind.string,
  idempotencyKey: kind.string,
  headers: kind.any,
  contentType: kind.string,
  delayMs: kind.durationMs,
  deliverAt: kind.date,
  traceparent: kind.string,
  tracestate: kind.string,
}
const FILTER = {
  errorKind: kind.string,
  cause: kind.string,
  errorContains: kind.string,
  failedBefore: kind.date,
  messageIds: kind.strings,
}

/** Every call's options, by the name the errors use for the call. */
const OPTIONS = {
  publish: PUBLISH,
  message: { payload: kind.any, ...PUBLISH },
  worker: WORKER,
  retry: RETRY,
  deadLetters: { limit: kind.count(1), after: kind.string },
  redrive: { ...FILTER, perSecond: kind.positive, limit: kind.count(0) },
  purge: FILTER,
  app: { group: kind.string, defaultTopic: kind.string },
  task: { topic: kind.string, retry: kind.object, idempotencyKey: kind.function },
  signature: { topic: kind.string },
  applyAsync: {
    kwargs: kind.object,
    countdownMs: kind.durationMs,
    eta: kind.date,
    key: kind.string,
    idempotencyKey: kind.string,
    headers: kind.any,
  },
  appWorkers: { ...WORKER, topics: kind.strings },
  appSchedule: {
    cron: kind.string,
    everyMs: kind.durationMs,
    zone: kind.string,
    start: kind.date,
    end: kind.date,
    misfire: kind.oneOf(['skip', 'once', 'all']),
    misfireCap: kind.count(1),
    args: (v) => (Array.isArray(v) ? undefined : 'must be an array'),
    kwargs: kind.object,
  },
  upsertSchedule: {
    cron: kind.string,
    everyMs: kind.durationMs,
    zone: kind.string,
    start: kind.date,
    end: kind.date,
    misfire: kind.oneOf(['skip', 'once', 'all']),
    misfireCap: kind.count(1),
    key: kind.string,
    headers: kind.any,
    contentType: kind.string,
  },
  setLogger: { level: kind.oneOf(['error', 'warn', 'info', 'debug', 'trace']) },
}

/** The option names of each call (for the parity test). */
const KNOWN = Object.fromEntries(Object.entries(OPTIONS).map(([call, options]) => [call, Object.keys(options)]))

/**
 * `options` checked against what `call` takes (see OPTIONS); `undefined`
 * or `null` is no options, and an option set to `undefined` or `null` is
 * unset (as `None` is in Python). `prefix` names
 * where the options sit (`retry.`), for the error. Returns the options, or `{}`.
 */
function checkOptions(call, options, prefix = '') {
  if (options === undefined || options === null) return {}
  const known = OPTIONS[call]
  if (typeof options !== 'object' || Array.isArray(options)) {
    const what = Array.isArray(options) ? 'an array' : typeof options
    throw invalidOption(prefix.replace(/\.$/, '') || `${call} options`, `must be an object of options, not ${what}`)
  }
  for (const [name, value] of Object.entries(options)) {
    const check = known[name]
    if (!check) {
      const near = closest(name, Object.keys(known))
      const hint = near ? ` (did you mean \`${prefix}${near}\`?)` : ''
      throw invalidOption(`${prefix}${name}`, `not an option of ${call}${hint}; its options are ${Object.keys(known).join(', ')}`)
    }
    if (value === undefined || value === null) continue
    const why = check(value)
    if (why) throw invalidOption(`${prefix}${name}`, `${why}, not ${describe(value)}`)
  }
  return options
}

/** A value as an error message shows it. */
function describe(value) {
  if (value === null) return 'null'
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)}`
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `${typeof value} ${String(value)}`
  if (Array.isArray(value)) return 'an array'
  if (value instanceof Date) return 'an invalid Date'
  return typeof value === 'object' ? 'an object' : typeof value
}

/** The known name nearest to `name`, if a typo away (an edit distance of at most 2). */
function closest(name, known) {
  let best = null
  let bestDistance = 3
  for (const candidate of known) {
    const d = distance(name.toLowerCase(), candidate.toLowerCase())
    if (d < bestDistance) [best, bestDistance] = [candidate, d]
  }
  return best
}

function distance(a, b) {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = row
  }
  return previous[b.length]
}

/**
 * The topic and group names of a call are strings (the core then checks
 * what they may hold); anything else is a TypeError naming it, never the
 * addon's conversion error.
 */
function checkNames(names) {
  for (const [what, value] of Object.entries(names)) {
    if (typeof value !== 'string') throw new TypeError(`${what} must be a string, not ${describe(value)}`)
  }
}

module.exports = { checkOptions, checkNames, KNOWN }
