'use strict'
/**
 * A task layer like the Python package's: tasks registered by name, called
 * with `delay()` / `applyAsync()`, run by a worker. A call travels as the
 * JSON envelope of docs/tasks.md (`{"task", "args", "kwargs"}`), so a task
 * published with Python's `.delay()` runs here and the other way round.
 * Keyword arguments, when a call has any, reach a JavaScript task as one
 * last argument (an object).
 *
 *   const app = new App('redis://localhost')
 *   const sendWelcome = app.task('emails.send_welcome', async (to) => { ... }, {
 *     idempotencyKey: (to) => `welcome-${to}`,
 *   })
 *   await sendWelcome.delay('ada@example.com')
 *   await app.runWorker({ concurrency: 8 })        // until SIGTERM or Ctrl-C
 */

const { connect } = require('./broker.js')
const { Worker } = require('./worker.js')
const { Fatal } = require('./outcomes.js')
const { checkOptions, checkNames } = require('./options.js')
const { invalidOption } = require('./errors.js')
const { Scheduler } = require('./scheduler.js')
const { app: APP_DEFAULTS } = require('./defaults.js')

const DEFAULT_GROUP = APP_DEFAULTS.group
const DEFAULT_TOPIC = APP_DEFAULTS.defaultTopic
const TASK_HEADER = 'task'

function envelope(name, args, kwargs) {
  return JSON.stringify({ task: name, args, kwargs })
}

function readEnvelope(payload) {
  let body
  try {
    body = JSON.parse(payload.toString('utf8'))
  } catch (e) {
    throw new Fatal(`not a task envelope (invalid JSON: ${e.message})`, { kind: 'InvalidEnvelope' })
  }
  if (!body || typeof body.task !== 'string') throw new Fatal('not a task envelope (no task name)', { kind: 'InvalidEnvelope' })
  const args = body.args ?? []
  const kwargs = body.kwargs ?? {}
  if (!Array.isArray(args) || typeof kwargs !== 'object' || Array.isArray(kwargs)) {
    throw new Fatal('not a task envelope (args must be an array, kwargs an object)', { kind: 'InvalidEnvelope' })
  }
  return { name: body.task, args, kwargs }
}

/** A registered task: `delay()` or `applyAsync()` to have a worker run it. */
class Task {
  constructor(app, name, handler, { topic, idempotencyKey }) {
    this.app = app
    this.name = name
    this.handler = handler
    this.topic = topic
    this.idempotencyKey = idempotencyKey
  }

  /** Publishes a call with these arguments; resolves to the message id. */
  delay(...args) {
    return this.applyAsync(args)
  }

  /** Publishes a call: `{ kwargs, countdownMs, eta, key, idempotencyKey, headers }`. */
  async applyAsync(args = [], options) {
    let { kwargs = {}, countdownMs, eta, key, idempotencyKey, headers = {} } = checkOptions('applyAsync', options)
    if (idempotencyKey === undefined && this.idempotencyKey) idempotencyKey = this.idempotencyKey(...args)
    const broker = await this.app.ensureTopic(this.topic)
    return broker.publish(this.topic, envelope(this.name, args, kwargs), {
      key,
      idempotencyKey,
      headers: { ...headers, [TASK_HEADER]: this.name },
      contentType: 'application/json',
      delayMs: countdownMs,
      deliverAt: eta,
    })
  }
}

/** Tasks, the broker they go through, and the workers that run them. Retry settings belong to a topic. */
class App {
  constructor(url, options) {
    checkNames({ url })
    const { group = DEFAULT_GROUP, defaultTopic = DEFAULT_TOPIC } = checkOptions('app', options)
    this.url = url
    this.group = group
    this.defaultTopic = defaultTopic
    this.tasks = new Map()
    this.retry = new Map()
    this._broker = null
    this._ensured = new Map()
  }

  /** The app's connection, opened on first use (with a group for each of its topics). */
  broker() {
    if (!this._broker) {
      this._broker = (async () => {
        const broker = await connect(this.url)
        for (const topic of this.topics()) await broker.ensureGroup(topic, this.group)
        return broker
      })()
    }
    return this._broker
  }

  /**
   * The broker, once the group that runs `topic`'s tasks exists: a group
   * only receives what is published after it exists (RabbitMQ routes a
   * message to no queue while its topic has no group). Once per topic.
   */
  ensureTopic(topic) {
    if (!this._ensured.has(topic)) {
      const ready = this.broker().then(async (broker) => {
        await broker.ensureGroup(topic, this.group)
        return broker
      })
      ready.catch(() => this._ensured.delete(topic))
      this._ensured.set(topic, ready)
    }
    return this._ensured.get(topic)
  }

  /**
   * A task registered elsewhere (another service, another language), to
   * call by name with `delay()` or `applyAsync()`; it goes to `topic`
   * (default: the app's default topic). This app's workers do not run it.
   */
  signature(name, options) {
    checkNames({ 'a task name': name })
    const { topic = this.defaultTopic } = checkOptions('signature', options)
    return new Task(this, name, null, { topic })
  }

  /** Registers a task; tasks of one topic share one retry policy. */
  task(name, handler, options) {
    checkNames({ 'a task name': name })
    if (typeof handler !== 'function') throw new TypeError(`a task's handler must be a function, not ${typeof handler}`)
    const { topic = this.defaultTopic, retry, idempotencyKey } = checkOptions('task', options)
    if (retry !== undefined) checkOptions('retry', retry, 'retry.')
    if (this.tasks.has(name)) throw new Error(`a task named ${name} is already registered`)
    if (retry) {
      const known = this.retry.get(topic)
      if (known && JSON.stringify(known) !== JSON.stringify(retry)) {
        throw new Error(`task ${name}: topic ${topic} already has another retry policy; tasks of one topic share one policy`)
      }
      this.retry.set(topic, retry)
    }
    const task = new Task(this, name, handler, { topic, idempotencyKey })
    this.tasks.set(name, task)
    return task
  }

  topics() {
    return [...new Set([...this.tasks.values()].map((t) => t.topic))].sort()
  }

  /** The handler that runs this app's tasks from a topic's messages. */
  handler() {
    return async (job) => {
      const { name, args, kwargs } = readEnvelope(job.payload)
      const task = this.tasks.get(name)
      if (!task) throw new Fatal(`no task named ${name} is registered in this worker`, { kind: 'UnknownTask' })
      await (Object.keys(kwargs).length ? task.handler(...args, kwargs) : task.handler(...args))
    }
  }

  /**
   * Runs `task` (a task, or the name of one registered anywhere) with
   * `args` and `kwargs` at each tick of `cron` or `everyMs`: the schedule
   * `name`, kept by the broker (see `broker.upsertSchedule`; `runWorker`
   * runs a scheduler). Resolves to `created`, `updated` or `unchanged`.
   */
  async schedule(name, task, options) {
    checkNames({ name })
    const { args = [], kwargs = {}, ...when } = checkOptions('appSchedule', options)
    // A name this app registered goes to its task's topic.
    const target = task instanceof Task ? task : this.tasks.get(task) ?? this.signature(task)
    const broker = await this.ensureTopic(target.topic)
    return broker.upsertSchedule(name, target.topic, envelope(target.name, args, kwargs), {
      ...when,
      headers: { [TASK_HEADER]: target.name },
      contentType: 'application/json',
    })
  }

  /** One worker per topic (all of the app's by default). */
  async workers(options) {
    const { topics = this.topics(), ...rest } = checkOptions('appWorkers', options)
    if (topics.length === 0) throw new Error('no tasks are registered, so there is nothing to run')
    const broker = await this.broker()
    return topics.map((topic) => new Worker(broker, topic, this.group, this.handler(), { retry: this.retry.get(topic), ...rest }))
  }

  /**
   * The app's workers and, unless `scheduler` is false, a Scheduler of the
   * broker's schedules: what `runWorker` runs.
   */
  async runners(options = {}) {
    const { scheduler = true, ...rest } = options ?? {}
    if (typeof scheduler !== 'boolean') throw invalidOption('scheduler', `must be true or false, not ${typeof scheduler}`)
    const runners = await this.workers(rest)
    if (scheduler) runners.push(new Scheduler(await this.broker()))
    return runners
  }

  /**
   * Runs the app's tasks, and the ticks of the broker's schedules (unless
   * `{ scheduler: false }`), until SIGTERM or Ctrl-C, then shuts down
   * gracefully and closes the broker.
   */
  async runWorker(options = {}) {
    const workers = await this.runners(options)
    const stop = () => workers.forEach((w) => w.shutdown())
    process.once('SIGTERM', stop)
    process.once('SIGINT', stop)
    try {
      await Promise.all(workers.map((w) => w.run()))
    } finally {
      process.off('SIGTERM', stop)
      process.off('SIGINT', stop)
      await (await this.broker()).close()
    }
  }
}

module.exports = { App, Task, envelope, readEnvelope }
