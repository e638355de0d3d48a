'use strict'

const native = require('./native.js')
const { call, sync } = require('./errors.js')
const { Broker } = require('./broker.js')

/**
 * Publishes each due tick of the schedules `broker` keeps
 * (`broker.upsertSchedule`), once however many schedulers run: run one in
 * every worker process if you like.
 */
class Scheduler {
  constructor(broker) {
    if (!(broker instanceof Broker)) throw new TypeError('broker must be a Broker (from connect())')
    this._native = sync(() => new native.Scheduler(broker._native))
  }

  /** Runs until `shutdown()`. */
  async run() {
    return call(this._native.run())
  }

  /** Stops `run()` after the pass in progress. */
  shutdown() {
    this._native.shutdown()
  }
}

module.exports = { Scheduler }
