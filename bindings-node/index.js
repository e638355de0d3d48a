'use strict'
/**
 * Pillarbox for Node: one producer/consumer API over Redis, RabbitMQ, Kafka
 * and an embedded store, with retries, dead letters and idempotency keys
 * that behave the same on every backend and in every language.
 *
 *   const { connect, Worker } = require('pillarbox')
 *   const broker = await connect('sqlite://queue.db')
 *   await broker.ensureGroup('emails', 'sender')
 *   await broker.publish('emails', JSON.stringify({ to: 'ada@example.com' }), { idempotencyKey: 'welcome-1' })
 *   const worker = new Worker(broker, 'emails', 'sender', async (job) => send(job.json()), { concurrency: 8 })
 *   await worker.run()   // until worker.shutdown()
 *
 * The worker runtime is the core's, in Rust: the retry budget, dead letters,
 * idempotency, leases (renewed on the core's threads, whatever the event
 * loop is doing) and graceful shutdown are the same as in Rust and Python.
 * This file only gives the API its JavaScript shape.
 */

const native = require('./native/pillarbox.node')
const { PillarboxError, invalidOption } = require('./lib/errors.js')
const { checkOptions } = require('./lib/options.js')

/** The native layer rejects with `[CODE] message`: make that a PillarboxError. */
function fromNative(e) {
  const m = e && typeof e.message === 'string' && /^\[([A-Z_]+)\] ([\s\S]*)$/.exec(e.message)
  return m ? new PillarboxError(m[1], m[2]) : e
}

async function call(promise) {
  try {
    return await promise
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * Calls settled through one shared channel rather than a native Promise
 * each (see src/completions.rs): `submit(start)` calls `start(completions,
 * ticket)` and resolves with what the ticket settles with.
 */
const pending = new Map()
let nextTicket = 1
const completions = new native.Completions(() => {
  const rows = completions.take()
  for (let at = 0; at < rows.length; at += 3) {
    const ticket = rows[at]
    const { resolve, reject } = pending.get(ticket)
    pending.delete(ticket)
    if (rows[at + 2] === null) resolve(rows[at + 1])
    else reject(fromNative(new Error(rows[at + 2])))
  }
})

function submit(start) {
  const ticket = nextTicket
  nextTicket = nextTicket === 0xffffffff ? 1 : nextTicket + 1
  return new Promise((resolve, reject) => {
    sync(() => start(completions, ticket))
    pending.set(ticket, { resolve, reject })
  })
}

function sync(fn) {
  try {
    return fn()
  } catch (e) {
    throw fromNative(e)
  }
}

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

function invalidMessage(why) {
  return new PillarboxError('INVALID_MESSAGE', `invalid message: ${why}`)
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

/** A connection to a broker. Share one per process. */
class Broker {
  constructor(inner) {
    this._native = inner
  }

  /** `memory`, `sqlite`, `redis`, `amqp` or `kafka`. */
  get backend() {
    return this._native.backend
  }

  /** The broker URL, with any password redacted. */
  get url() {
    return this._native.url
  }

  /** What this backend can do (delayed delivery, ordering, limits...). */
  capabilities() {
    return this._native.capabilities()
  }

  /** Creates `group` on `topic` if needed: a subscription that receives everything from now on. */
  ensureGroup(topic, group) {
    return call(this._native.ensureGroup(topic, group))
  }

  /**
   * Publishes a payload (resolves to its id) or an array of payloads and
   * `{ payload, ...options }` messages as one batch (resolves to the ids),
   * once the broker holds every one. Nothing of a batch is published if any
   * message is invalid or too large.
   */
  async publish(topic, what, options = {}) {
    if (Array.isArray(what)) {
      if (Object.keys(checkOptions('publish', options)).length) {
        throw invalidOption(Object.keys(options)[0], 'a batch takes its options per message ({ payload, ...options })')
      }
      if (what.every(isPayload)) return this._publishPayloads(topic, what)
      // A bare payload crosses as its bytes alone: cheaper than a message.
      const batch = what.map((m) => (isPayload(m) ? toBuffer(m) : messageInput(checkMessage(m).payload, m)))
      return submit((c, ticket) => this._native.publish(topic, batch, c, ticket))
    }
    checkOptions('publish', options)
    if (isPayload(what) && Object.keys(options).length === 0) {
      const [id] = await this._publishPayloads(topic, [what])
      return id
    }
    const message = isPayload(what) ? messageInput(what, options) : messageInput(checkMessage(what).payload, { ...what, ...options })
    const [id] = await submit((c, ticket) => this._native.publish(topic, [message], c, ticket))
    return id
  }

  /**
   * Bare payloads, the common case, cross as one buffer and their lengths:
   * a Buffer each costs a reference and a type check across the boundary
   * (about 30 µs of the event loop's time for a batch of 100).
   */
  _publishPayloads(topic, payloads) {
    const buffers = payloads.map(toBuffer)
    const lengths = new Uint32Array(buffers.length)
    for (let n = 0; n < buffers.length; n++) lengths[n] = buffers[n].length
    const joined = buffers.length === 1 ? buffers[0] : Buffer.concat(buffers)
    return submit((c, ticket) => this._native.publishPayloads(topic, joined, lengths, c, ticket))
  }

  /** The group's figures: ready, inFlight, waiting, deadLetters, oldestAgeMs, partitions. */
  inspect(topic, group) {
    return call(this._native.inspect(topic, group))
  }

  /** The groups of `topic`. */
  groups(topic) {
    return call(this._native.groups(topic))
  }

  /** The group's dead letters with their reason, oldest first. */
  async deadLetters(topic, group, options) {
    const { limit = 100, after } = checkOptions('deadLetters', options)
    const found = await call(this._native.deadLetters(topic, group, after, limit))
    return found.map(deadLetter)
  }

  /** Sends matching dead letters back to their group as fresh messages; resolves to how many. */
  redrive(topic, group, filter) {
    checkOptions('redrive', filter)
    return call(this._native.redrive(topic, group, filterInput(filter)))
  }

  /** Deletes matching dead letters (all of them without a filter); resolves to how many. */
  purge(topic, group, filter) {
    checkOptions('purge', filter)
    return call(this._native.purge(topic, group, filterInput(filter)))
  }

  /** Closes the connection. */
  close() {
    return call(this._native.close())
  }
}

/** Connects to the broker `url` names (`memory://`, `sqlite://PATH`, `redis://`, `amqp://`, `kafka://`...). */
async function connect(url, ...rest) {
  if (rest.length && rest[0] !== undefined) {
    throw invalidOption('connect options', "connect takes a URL only: options go in the URL's query (`redis://host?name=value`)")
  }
  return new Broker(await call(native.connect(url)))
}

/** Throw in a handler to retry the job (within the budget), after `afterMs` if given. */
class Retry extends Error {
  constructor(reason = '', { afterMs, cause } = {}) {
    super(reason, cause === undefined ? undefined : { cause })
    this.name = 'Retry'
    this.afterMs = afterMs
  }
}

/** Throw in a handler to dead-letter the job at once: no retry can fix it. */
class Fatal extends Error {
  constructor(reason = '', { kind, cause } = {}) {
    super(reason, cause === undefined ? undefined : { cause })
    this.name = 'Fatal'
    this.kind = kind
  }
}

/**
 * A batch of jobs from the native dispatcher is one Buffer (`take()`, see
 * `QueuedJob::encode` in src/handler.rs for the layout): a value per field
 * would cost a call across the boundary each. A job reads the numbers and
 * its payload at once, and the rest of the metadata only if the handler
 * asks for it.
 */
const NONE = 0xffffffff // the length of a null string

/** Reads the strings and numbers of a block from `at` on. */
class BlockReader {
  constructor(block, at) {
    this.block = block
    this.at = at
  }

  u32() {
    const n = this.block.readUInt32LE(this.at)
    this.at += 4
    return n
  }

  f64() {
    const n = this.block.readDoubleLE(this.at)
    this.at += 8
    return n
  }

  /** A time in milliseconds since the epoch as a Date; NaN means none. */
  date() {
    const ms = this.f64()
    return Number.isNaN(ms) ? null : new Date(ms)
  }

  str() {
    const length = this.u32()
    if (length === NONE) return null
    const text = this.block.toString('utf8', this.at, this.at + length)
    this.at += length
    return text
  }
}

/** What a handler is given. */
class Job {
  /** Reads the job at `at` in `block`; `_end` is where the next one starts. */
  constructor(block, at) {
    this._block = block
    this._end = at + block.readUInt32LE(at)
    this._id = block.readUInt32LE(at + 4)
    this.attempt = block.readUInt32LE(at + 8)
    this.maxAttempts = block.readUInt32LE(at + 12)
    const deadline = block.readDoubleLE(at + 16)
    /** When the attempt times out (`handlerTimeoutMs`), or null. */
    this.deadline = Number.isNaN(deadline) ? null : new Date(deadline)
    const length = block.readUInt32LE(at + 24)
    // A view of the block, not a copy.
    this.payload = block.subarray(at + 28, at + 28 + length)
    const reader = new BlockReader(block, at + 28 + length)
    this._script = reader.str()
    this._metadata = reader.at
    this._message = undefined
    this._controller = undefined
    this._aborted = false
  }

  /** The message with every metadata field (decoded on first use: most handlers need only the payload). */
  get message() {
    if (this._message === undefined) {
      const r = new BlockReader(this._block, this._metadata)
      const attempt = r.u32()
      const publishedAt = r.date()
      const deliverAt = r.date()
      const [id, topic, group, key, idempotencyKey, contentType, traceparent, tracestate] = [
        r.str(), r.str(), r.str(), r.str(), r.str(), r.str(), r.str(), r.str(),
      ]
      const headers = {}
      for (let n = r.u32(); n > 0; n--) {
        const name = r.str()
        headers[name] = r.str()
      }
      const failures = r.block[r.at++] === 1
        ? { firstFailedAt: r.date(), lastFailedAt: r.date(), lastErrorKind: r.str(), lastError: r.str() }
        : null
      this._topic = topic
      this._group = group
      this._message = {
        id, payload: this.payload, key, idempotencyKey, contentType, headers, attempt, publishedAt, deliverAt,
        traceparent, tracestate, failures,
      }
    }
    return this._message
  }

  get id() {
    return this.message.id
  }

  get topic() {
    return this.message && this._topic
  }

  get group() {
    return this.message && this._group
  }

  /** Aborted when the worker gives up on this attempt (timeout, end of the shutdown grace). */
  get signal() {
    if (this._controller === undefined) {
      this._controller = new AbortController()
      if (this._aborted) this._controller.abort()
    }
    return this._controller.signal
  }

  _abort() {
    this._aborted = true
    if (this._controller !== undefined) this._controller.abort()
  }

  /** Whether a failure now dead-letters the message rather than retrying it. */
  get isLastAttempt() {
    return this.attempt >= this.maxAttempts
  }

  /** The payload as UTF-8 text; `INVALID_MESSAGE` if it is not UTF-8 (never replacement characters). */
  text() {
    try {
      return UTF8.decode(this.payload)
    } catch {
      throw new PillarboxError('INVALID_MESSAGE', 'invalid message: the payload is not valid UTF-8')
    }
  }

  /** The payload parsed as JSON; `INVALID_MESSAGE` if it is not UTF-8 JSON. */
  json() {
    const text = this.text()
    try {
      return JSON.parse(text)
    } catch (e) {
      throw new PillarboxError('INVALID_MESSAGE', `invalid message: the payload is not JSON (${e.message})`)
    }
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true })

function errorName(e) {
  if (e && typeof e.name === 'string' && e.name) return e.name
  return 'Error'
}

/** What a thrown value means to the core: kind, message, retryable, and when. */
function outcome(e, { retryFor, fatalFor = [] }) {
  const cause = e instanceof Error && e.cause !== undefined ? e.cause : undefined
  if (e instanceof Retry) {
    return { kind: cause ? errorName(cause) : 'Retry', message: e.message, retryable: true, retryAfterMs: e.afterMs }
  }
  if (e instanceof Fatal) {
    return { kind: e.kind || (cause ? errorName(cause) : 'Fatal'), message: e.message, retryable: false }
  }
  const is = (classes) => classes.some((c) => e instanceof c)
  return {
    kind: errorName(e),
    message: e instanceof Error ? e.message : String(e),
    retryable: !is(fatalFor) && (retryFor === undefined || is(retryFor)),
  }
}

/**
 * The native dispatcher a worker's jobs come through: woken when jobs are
 * queued, it takes them all at once and runs the handler on each; the
 * successes of one turn of the event loop are reported in one call, each
 * failure with its outcome. It aborts a job's signal when the worker gives
 * up on it. The handler's second argument is the job's conformance script.
 */
function dispatcher(handler, classes = {}) {
  const running = new Map()
  let jobs
  // The ids of the handlers that succeeded since the last flush.
  let succeeded = new Uint32Array(256)
  let count = 0
  const flush = () => {
    const ids = succeeded.subarray(0, count)
    count = 0
    jobs.succeed(ids)
  }
  const succeed = (id) => {
    if (count === succeeded.length) {
      const larger = new Uint32Array(count * 2)
      larger.set(succeeded)
      succeeded = larger
    }
    succeeded[count++] = id
    if (count === 1) queueMicrotask(flush)
  }
  const run = async (job) => {
    const id = job._id
    running.set(id, job)
    let failure = null
    try {
      await handler(job, job._script)
    } catch (e) {
      try {
        failure = outcome(e, classes)
      } catch {
        failure = { kind: 'Error', message: 'the handler threw a value that could not be read', retryable: true }
      }
    }
    running.delete(id)
    if (failure !== null) jobs.complete(id, failure)
    else succeed(id)
  }
  const wake = () => {
    const block = jobs.take()
    for (let at = 0; at < block.length; ) {
      const job = new Job(block, at)
      at = job._end
      run(job)
    }
  }
  const cancel = (id) => {
    const job = running.get(id)
    if (job !== undefined) job._abort()
  }
  jobs = new native.Dispatcher(wake, cancel)
  return jobs
}

/**
 * Runs `handler` on the messages of `group` on `topic`. Resolving is
 * success; throwing `Retry` retries, `Fatal` dead-letters at once, anything
 * else is a retryable failure whose kind is the error's `name` (see
 * `retryFor` and `fatalFor`).
 */
class Worker {
  constructor(broker, topic, group, handler, options = {}) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function')
    const { retryFor, fatalFor, ...rest } = checkOptions('worker', options)
    const retry = checkOptions('retry', rest.retry, 'retry.')
    const jobs = dispatcher(handler, { retryFor: retryFor ?? undefined, fatalFor: fatalFor ?? undefined })
    // null is unset, as undefined is: the addon takes only undefined for that.
    const nativeOptions = {
      concurrency: rest.concurrency ?? undefined,
      prefetch: rest.prefetch ?? undefined,
      maxRetries: retry.maxRetries ?? undefined,
      initialDelayMs: retry.initialDelayMs ?? undefined,
      multiplier: retry.multiplier ?? undefined,
      maxDelayMs: retry.maxDelayMs ?? undefined,
      jitter: retry.jitter ?? undefined,
      handlerTimeoutMs: rest.handlerTimeoutMs ?? undefined,
      leaseMs: rest.leaseMs ?? undefined,
      pollWaitMs: rest.pollWaitMs ?? undefined,
      shutdownGraceMs: rest.shutdownGraceMs ?? undefined,
      idempotencyRetentionMs: rest.idempotencyRetentionMs ?? undefined,
      busyKeyDelayMs: rest.busyKeyDelayMs ?? undefined,
      consumerName: rest.consumerName ?? undefined,
      idempotencyStore: rest.idempotencyStore ?? undefined,
    }
    this._native = sync(() => new native.Worker(broker._native, topic, group, jobs, nativeOptions))
  }

  /** This consumer's name, as the broker knows it. */
  get consumerName() {
    return this._native.consumerName
  }

  /** Runs until `shutdown()`, then shuts down gracefully; resolves when done. */
  run() {
    return call(this._native.run())
  }

  /** Stops taking messages; running handlers get the grace period, then are aborted and handed back. */
  shutdown() {
    this._native.shutdown()
  }

  /** What the worker has done so far. */
  stats() {
    return this._native.stats()
  }
}

const LEVELS = ['error', 'warn', 'info', 'debug', 'trace']

/**
 * Where the core's log events go: a function `(level, message)` or an
 * object with `error`/`warn`/`info`/`debug` methods (console, pino,
 * winston...), at `level` and above; `null` for nowhere. By default,
 * warnings and errors go to the console.
 */
function setLogger(logger, options) {
  const { level = 'info' } = checkOptions('setLogger', options)
  if (logger == null) return sync(() => native.setLogger(null, level))
  const log =
    typeof logger === 'function'
      ? (r) => logger(r.level, r.message)
      : (r) => {
          const method = logger[r.level] || logger.log
          if (typeof method === 'function') method.call(logger, `pillarbox: ${r.message}`)
        }
  if (!LEVELS.includes(level)) throw new TypeError(`level must be one of ${LEVELS.join(', ')}`)
  return sync(() => native.setLogger(log, level))
}

setLogger(console, { level: 'warn' })

/** The core's conformance scenarios, with JavaScript handlers (see test/conformance.test.js). */
const conformance = {
  scenarios: () => native.scenarios(),
  /** Resolves to null when the scenario passed, or why it was skipped; rejects when it failed. */
  run(url, name, handler) {
    return call(native.runScenario(url, name, dispatcher(handler)))
  },
}

module.exports = { connect, Broker, Worker, Job, Retry, Fatal, PillarboxError, setLogger, conformance }

// The task layer builds on the above (and requires this module): added last.
const { App, Task } = require('./tasks.js')
module.exports.App = App
module.exports.Task = Task
