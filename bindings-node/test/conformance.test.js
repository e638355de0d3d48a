'use strict'
// The core's conformance scenarios with JavaScript handlers, on every
// backend: the same list and assertions as the Rust and Python tests.
const { test } = require('node:test')
const { conformance, Fatal } = require('..')
const { URLS, BACKENDS } = require('./support')

/** A handler that acts out its scenario's script (JSON, carried by each job). */
function actsOut() {
  const parsed = new Map()
  return async (job, json) => {
    let script = parsed.get(json)
    if (!script) parsed.set(json, (script = JSON.parse(json)))
    const b = script.behaviours.find((b) => b.payload_prefix == null || job.text().startsWith(b.payload_prefix))
    if (!b) return
    if (b.blocking) {
      // Blocks the event loop, as CPU-bound JavaScript does.
      const until = Date.now() + b.work_ms
      while (Date.now() < until) {}
    } else if (b.work_ms) {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, b.work_ms)
        job.signal.addEventListener('abort', () => {
          clearTimeout(timer)
          reject(job.signal.reason)
        })
      })
    }
    if (job.attempt <= b.fail_through) {
      const f = b.failure
      if (f.as === 'fatal') throw new Fatal(f.message, { kind: f.kind })
      if (f.as === 'panic') throw f.message // not an Error: the unplanned kind of failure
      const e = new Error(f.message)
      e.name = f.kind
      throw e
    }
  }
}

for (const backend of BACKENDS) {
  for (const scenario of conformance.scenarios()) {
    test(`${backend}: ${scenario}`, async (t) => {
      const skipped = await conformance.run(URLS[backend](), scenario, actsOut())
      if (skipped) t.skip(skipped)
    })
  }
}
