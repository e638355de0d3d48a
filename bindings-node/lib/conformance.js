'use strict'

const native = require('./native.js')
const { call } = require('./errors.js')
const { dispatcher } = require('./jobs.js')

/** The core's conformance scenarios, with JavaScript handlers (see test/conformance.test.js). */
const conformance = {
  scenarios: () => native.scenarios(),
  /** Resolves to null when the scenario passed, or why it was skipped; rejects when it failed. */
  run(url, name, handler) {
    return call(native.runScenario(url, name, dispatcher(handler)))
  },
}

module.exports = { conformance }
