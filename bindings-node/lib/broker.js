'use strict'

const native = require('./native.js')
const { call, invalidOption } = require('./errors.js')
const { submit } = require('./completions.js')
const { checkOptions, checkNames } = require('./options.js')
const {
  isPayload, toBuffer, messageInput, checkMessage, filterInput, deadLetter, scheduleInput, scheduleInfo,
} = require('./codec.js')

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
  async ensureGroup(topic, group) {
    checkNames({ topic, group })
    return call(this._native.ensureGroup(topic, group))
  }

  /**
   * Publishes a payload (resolves to its id) or an array of payloads and
   * `{ payload, ...options }` messages as one batch (resolves to the ids),
   * once the broker holds every one. Nothing of a batch is published if any
   * message is invalid or too large.
   */
  async publish(topic, what, options = {}) {
    checkNames({ topic })
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
  async inspect(topic, group) {
    checkNames({ topic, group })
    return call(this._native.inspect(topic, group))
  }

  /** The groups of `topic`. */
  async groups(topic) {
    checkNames({ topic })
    return call(this._native.groups(topic))
  }

  /** The group's dead letters with their reason, oldest first. */
  async deadLetters(topic, group, options) {
    checkNames({ topic, group })
    const { limit, after } = checkOptions('deadLetters', options)
    const found = await call(this._native.deadLetters(topic, group, after ?? undefined, limit ?? undefined))
    return found.map(deadLetter)
  }

  /** Sends matching dead letters back to their group as fresh messages; resolves to how many. */
  async redrive(topic, group, filter) {
    checkNames({ topic, group })
    checkOptions('redrive', filter)
    return call(this._native.redrive(topic, group, filterInput(filter)))
  }

  /**
   * Creates or replaces the schedule `name`: at each tick of `cron` (read
   * in the IANA time `zone`, UTC by default) or every `everyMs`, `payload`
   * is published to `topic` once, however many schedulers run. `misfire`
   * says what happens to ticks no scheduler was running for: `once` (the
   * default), `skip` or `all` (up to `misfireCap`). Resolves to `created`,
   * `updated` or `unchanged`.
   */
  async upsertSchedule(name, topic, payload, options) {
    checkNames({ name, topic })
    const checked = checkOptions('upsertSchedule', options)
    return call(this._native.upsertSchedule(name, topic, toBuffer(payload), scheduleInput(checked)))
  }

  /** The schedules this broker keeps, with their last and next run. */
  async schedules() {
    const found = await call(this._native.schedules())
    return found.map(scheduleInfo)
  }

  /** Pauses the schedule `name`; resolves to whether it exists. */
  async pauseSchedule(name) {
    checkNames({ name })
    return call(this._native.pauseSchedule(name))
  }

  /** Resumes it; ticks missed while paused are not published. */
  async resumeSchedule(name) {
    checkNames({ name })
    return call(this._native.resumeSchedule(name))
  }

  /**
   * Publishes the schedule's message now, outside its timetable (its next
   * tick comes as planned); resolves to the message id, null if there is
   * no such schedule.
   */
  async runScheduleNow(name) {
    checkNames({ name })
    return call(this._native.runScheduleNow(name))
  }

  /** Removes it; resolves to whether it existed. */
  async removeSchedule(name) {
    checkNames({ name })
    return call(this._native.removeSchedule(name))
  }

  /** Deletes matching dead letters (all of them without a filter); resolves to how many. */
  async purge(topic, group, filter) {
    checkNames({ topic, group })
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
  checkNames({ url })
  if (rest.length && rest[0] !== undefined) {
    throw invalidOption('connect options', "connect takes a URL only: options go in the URL's query (`redis://host?name=value`)")
  }
  return new Broker(await call(native.connect(url)))
}

module.exports = { Broker, connect }
