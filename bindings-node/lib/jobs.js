'use strict'
/** Jobs: how a batch crosses from the addon, what a handler sees, and how its outcome goes back. */

const native = require('./native.js')
const { invalidMessage } = require('./errors.js')
const { outcome } = require('./outcomes.js')

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
      const scheduledFor = r.date()
      const [id, topic, group, key, idempotencyKey, contentType, traceparent, tracestate, schedule] = [
        r.str(), r.str(), r.str(), r.str(), r.str(), r.str(), r.str(), r.str(), r.str(),
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
        traceparent, tracestate, schedule, scheduledFor, failures,
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
      throw invalidMessage('the payload is not valid UTF-8')
    }
  }

  /** The payload parsed as JSON; `INVALID_MESSAGE` if it is not UTF-8 JSON. */
  json() {
    const text = this.text()
    try {
      return JSON.parse(text)
    } catch (e) {
      throw invalidMessage(`the payload is not JSON (${e.message})`)
    }
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true })

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

module.exports = { Job, dispatcher }
