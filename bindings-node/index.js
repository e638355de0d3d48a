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

/** Codes whose errors may go away if the same call is made again later. */
const TRANSIENT = new Set(['CONNECT', 'BACKEND', 'TIMEOUT', 'QUEUE_FULL'])

/** Every error the package throws: `code` is the core's stable code. */
class PillarboxError extends Error {
  constructor(code, message) {
    super(message)
    this.name = 'PillarboxError'
    this.code = code
  }

  /** Whether the same call may succeed later (a lost connection, a timeout). */
  get transient() {
    return TRANSIENT.has(this.code)
  }
}

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

function toBuffer(payload) {
  if (Buffer.isBuffer(payload)) return payload
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8')
  throw new TypeError(`a payload must be a Buffer, a Uint8Array or a string, not ${payload === null ? 'null' : typeof payload}`)
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
    key: options.key,
    idempotencyKey: options.idempotencyKey,
    headers: options.headers,
    contentType: options.contentType,
    delayMs: options.delayMs,
    deliverAt: toMillis(options.deliverAt, 'deliverAt'),
    traceparent: options.traceparent,
    tracestate: options.tracestate,
  }
}

function filterInput(filter = {}) {
  return { ...filter, failedBefore: toMillis(filter.failedBefore, 'failedBefore') }
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
      // A bare payload crosses as its bytes alone: the common case, and the cheapest.
      const batch = what.map((m) => (isPayload(m) ? toBuffer(m) : messageInput(m.payload, m)))
      return submit((c, ticket) => this._native.publish(topic, batch, c, ticket))
    }
    const bare = isPayload(what) && Object.keys(options).length === 0
    const message = bare
      ? toBuffer(what)
      : isPayload(what)
        ? messageInput(what, options)
        : messageInput(what.payload, { ...what, ...options })
    const [id] = await submit((c, ticket) => this._native.publish(topic, [message], c, ticket))
    return id
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
  async deadLetters(topic, group, { limit = 100, after } = {}) {
    const found = await call(this._native.deadLetters(topic, group, after, limit))
    return found.map(deadLetter)
  }

  /** Sends matching dead letters back to their group as fresh messages; resolves to how many. */
  redrive(topic, group, filter = {}) {
    return call(this._native.redrive(topic, group, filterInput(filter)))
  }

  /** Deletes matching dead letters (all of them without a filter); resolves to how many. */
  purge(topic, group, filter = {}) {
    return call(this._native.purge(topic, group, filterInput(filter)))
  }

  /** Closes the connection. */
  close() {
    return call(this._native.close())
  }
}

/** Connects to the broker `url` names (`memory://`, `sqlite://PATH`, `redis://`, `amqp://`, `kafka://`...). */
async function connect(url) {
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
 * Where each value of a job sits in the rows the native dispatcher hands
 * over (`take()`, see src/handler.rs): values by position cost less to
 * cross than objects with named fields.
 */
const FIELD = {
  id: 0, attempt: 1, maxAttempts: 2, deadline: 3, payload: 4, messageId: 5, topic: 6, group: 7, key: 8,
  idempotencyKey: 9, contentType: 10, headers: 11, messageAttempt: 12, publishedAt: 13, deliverAt: 14,
  traceparent: 15, tracestate: 16, failures: 17, script: 18,
}
const FIELDS = 19

/** What a handler is given. */
class Job {
  constructor(rows, at) {
    this._rows = rows
    this._at = at
    this.payload = rows[at + FIELD.payload]
    this.topic = rows[at + FIELD.topic]
    this.group = rows[at + FIELD.group]
    this.attempt = rows[at + FIELD.attempt]
    this.maxAttempts = rows[at + FIELD.maxAttempts]
    const deadline = rows[at + FIELD.deadline]
    /** When the attempt times out (`handlerTimeoutMs`), or null. */
    this.deadline = deadline == null ? null : new Date(deadline)
    this._message = undefined
    this._controller = undefined
    this._aborted = false
  }

  /** The message with every metadata field (made on first use: most handlers need only the payload). */
  get message() {
    if (this._message === undefined) {
      const [rows, at] = [this._rows, this._at]
      this._message = message({
        id: rows[at + FIELD.messageId],
        payload: this.payload,
        key: rows[at + FIELD.key],
        idempotencyKey: rows[at + FIELD.idempotencyKey],
        contentType: rows[at + FIELD.contentType],
        headers: rows[at + FIELD.headers] || {},
        attempt: rows[at + FIELD.messageAttempt],
        publishedAt: rows[at + FIELD.publishedAt],
        deliverAt: rows[at + FIELD.deliverAt],
        traceparent: rows[at + FIELD.traceparent],
        tracestate: rows[at + FIELD.tracestate],
        failures: rows[at + FIELD.failures],
      })
    }
    return this._message
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

  get id() {
    return this._rows[this._at + FIELD.messageId]
  }

  /** Whether a failure now dead-letters the message rather than retrying it. */
  get isLastAttempt() {
    return this.attempt >= this.maxAttempts
  }

  text() {
    return this.payload.toString('utf8')
  }

  json() {
    return JSON.parse(this.text())
  }
}

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
  let succeeded = []
  const flush = () => {
    const ids = succeeded
    succeeded = []
    jobs.succeed(ids)
  }
  const run = async (rows, at) => {
    const job = new Job(rows, at)
    const id = rows[at + FIELD.id]
    running.set(id, job)
    let failure = null
    try {
      await handler(job, rows[at + FIELD.script])
    } catch (e) {
      try {
        failure = outcome(e, classes)
      } catch {
        failure = { kind: 'Error', message: 'the handler threw a value that could not be read', retryable: true }
      }
    }
    running.delete(id)
    if (failure !== null) jobs.complete(id, failure)
    else if (succeeded.push(id) === 1) queueMicrotask(flush)
  }
  const wake = () => {
    const rows = jobs.take()
    for (let at = 0; at < rows.length; at += FIELDS) run(rows, at)
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
    const { retry = {}, retryFor, fatalFor, ...rest } = options
    const jobs = dispatcher(handler, { retryFor, fatalFor })
    const nativeOptions = {
      concurrency: rest.concurrency,
      prefetch: rest.prefetch,
      maxRetries: retry.maxRetries,
      initialDelayMs: retry.initialDelayMs,
      multiplier: retry.multiplier,
      maxDelayMs: retry.maxDelayMs,
      jitter: retry.jitter,
      handlerTimeoutMs: rest.handlerTimeoutMs,
      leaseMs: rest.leaseMs,
      pollWaitMs: rest.pollWaitMs,
      shutdownGraceMs: rest.shutdownGraceMs,
      idempotencyRetentionMs: rest.idempotencyRetentionMs,
      busyKeyDelayMs: rest.busyKeyDelayMs,
      consumerName: rest.consumerName,
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
function setLogger(logger, { level = 'info' } = {}) {
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
