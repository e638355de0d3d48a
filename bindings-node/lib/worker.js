'use strict'

const native = require('./native.js')
const { call, sync } = require('./errors.js')
const { checkOptions, checkNames } = require('./options.js')
const { Broker } = require('./broker.js')
const { dispatcher } = require('./jobs.js')

/**
 * Runs `handler` on the messages of `group` on `topic`. Resolving is
 * success; throwing `Retry` retries, `Fatal` dead-letters at once, anything
 * else is a retryable failure whose kind is the error's `name` (see
 * `retryFor` and `fatalFor`).
 */
class Worker {
  constructor(broker, topic, group, handler, options = {}) {
    if (!(broker instanceof Broker)) throw new TypeError('broker must be a Broker, from connect()')
    checkNames({ topic, group })
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

module.exports = { Worker }
