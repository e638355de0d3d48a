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
 * This file only gathers the package's parts (lib/), which give the API its
 * JavaScript shape.
 */

const { PillarboxError } = require('./lib/errors.js')
const { Broker, connect } = require('./lib/broker.js')
const { Worker } = require('./lib/worker.js')
const { Job } = require('./lib/jobs.js')
const { Retry, Fatal } = require('./lib/outcomes.js')
const { setLogger } = require('./lib/logging.js')
const { conformance } = require('./lib/conformance.js')
const { App, Task } = require('./lib/tasks.js')
const { Scheduler } = require('./lib/scheduler.js')
const DEFAULTS = require('./lib/defaults.js')

module.exports = { connect, Broker, Worker, Job, Retry, Fatal, PillarboxError, setLogger, conformance, App, Task, Scheduler, DEFAULTS }
