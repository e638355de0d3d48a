'use strict'
/**
 * Values across the boundary: what publish sends (payloads, messages,
 * headers, times) checked and put in the addon's shape, and what comes back
 * (messages, dead letters) given JavaScript's (Dates).
 */

const { invalidMessage } = require('./errors.js')
const { checkOptions } = require('./options.js')

function isPayload(value) {
  return typeof value === 'string' || value instanceof Uint8Array
}

/**
 * The bytes of a payload. A string is sent as UTF-8, so one with a lone
 * surrogate (no UTF-8 for it) is refused rather than sent with U+FFFD in
 * its place; so is a view of a detached buffer, which would send nothing.
 */
function toBuffer(payload) {
  if (payload instanceof Uint8Array) {
    if (payload.buffer.detached) throw invalidMessage("the payload's buffer is detached (transferred or resized away): it holds nothing to send")
    return Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  }
  if (typeof payload === 'string') {
    if (typeof payload.isWellFormed === 'function' && !payload.isWellFormed()) {
      throw invalidMessage('the payload string has a lone surrogate: it is not valid Unicode, so it has no UTF-8')
    }
    return Buffer.from(payload, 'utf8')
  }
  throw new TypeError(`a payload must be a Buffer, a Uint8Array or a string, not ${describePayload(payload)}`)
}

function describePayload(value) {
  if (value === null || value === undefined) return String(value)
  if (Array.isArray(value)) return 'an array'
  if (value instanceof ArrayBuffer) return 'an ArrayBuffer (wrap it: new Uint8Array(buffer))'
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`
}


function toMillis(date, name) {
  if (date == null) return undefined
  if (!(date instanceof Date)) throw new TypeError(`${name} must be a Date`)
  return date.getTime()
}

/** A message to publish: a payload and its options, as the native layer takes it. */
function messageInput(payload, options = {}) {
  return {
    payload: toBuffer(payload),
    key: options.key ?? undefined,
    idempotencyKey: options.idempotencyKey ?? undefined,
    headers: checkHeaders(options.headers),
    contentType: options.contentType ?? undefined,
    delayMs: options.delayMs ?? undefined,
    deliverAt: toMillis(options.deliverAt, 'deliverAt'),
    traceparent: options.traceparent ?? undefined,
    tracestate: options.tracestate ?? undefined,
  }
}

/** Headers are strings to strings: anything else is refused, naming the header, as in Python and Rust. */
function checkHeaders(headers) {
  if (headers == null) return undefined
  const invalid = invalidMessage
  if (typeof headers !== 'object' || Array.isArray(headers)) {
    throw invalid(`headers must be an object of strings, not ${Array.isArray(headers) ? 'an array' : typeof headers}`)
  }
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value !== 'string') {
      throw invalid(`header \`${name}\` must be a string, not ${value === null ? 'null' : typeof value}`)
    }
  }
  return headers
}

/** A `{ payload, ...options }` message, its option names checked. */
function checkMessage(m) {
  if (m === null || typeof m !== 'object' || Array.isArray(m) || m instanceof ArrayBuffer) {
    throw new TypeError(`a message must be a Buffer, a Uint8Array, a string or { payload, ...options }, not ${describePayload(m)}`)
  }
  if (!('payload' in m)) {
    throw new TypeError('a message object needs a payload ({ payload, ...options }); to send an object as JSON, JSON.stringify it')
  }
  return checkOptions('message', m)
}

function filterInput(filter) {
  const set = Object.entries(filter ?? {}).filter(([, value]) => value != null)
  return { ...Object.fromEntries(set), failedBefore: toMillis(filter?.failedBefore, 'failedBefore') }
}

/** A received message: dates as Dates. */
function message(data) {
  return {
    ...data,
    publishedAt: new Date(data.publishedAt),
    deliverAt: data.deliverAt == null ? null : new Date(data.deliverAt),
    schedule: data.schedule ?? null,
    scheduledFor: data.scheduledFor == null ? null : new Date(data.scheduledFor),
    failures: data.failures
      ? {
          ...data.failures,
          firstFailedAt: new Date(data.failures.firstFailedAt),
          lastFailedAt: new Date(data.failures.lastFailedAt),
        }
      : null,
  }
}

function deadLetter(d) {
  return {
    id: d.id,
    message: message(d.message),
    reason: { ...d.reason, firstFailedAt: new Date(d.reason.firstFailedAt), lastFailedAt: new Date(d.reason.lastFailedAt) },
  }
}

/** A schedule's options as the native layer takes them (times in milliseconds). */
function scheduleInput(options = {}) {
  return {
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v != null)),
    headers: checkHeaders(options.headers),
    start: toMillis(options.start, 'start'),
    end: toMillis(options.end, 'end'),
  }
}

/** A schedule as listed: times as Dates. */
function scheduleInfo(s) {
  const date = (ms) => (ms == null ? null : new Date(ms))
  return {
    ...s,
    cron: s.cron ?? null,
    zone: s.zone ?? null,
    everyMs: s.everyMs ?? null,
    misfireCap: s.misfireCap ?? null,
    lastMessageId: s.lastMessageId ?? null,
    start: date(s.start),
    end: date(s.end),
    lastRun: date(s.lastRun),
    nextRun: date(s.nextRun),
  }
}

module.exports = {
  isPayload, toBuffer, messageInput, checkMessage, filterInput, message, deadLetter, scheduleInput, scheduleInfo,
}
