'use strict'
// The Node package's public surface against tests/parity/surface.json, the
// description every language is checked against (the Rust and Python
// packages have the same test): every option of the others is here, in
// camelCase (`Ms` after a duration), in the option checks and in the types.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { connect, Worker, DEFAULTS } = require('..')
const { KNOWN } = require('../lib/options.js')
const { URLS, topic } = require('./support.js')

const root = path.join(__dirname, '..', '..')
const SURFACE = JSON.parse(fs.readFileSync(path.join(root, 'tests/parity/surface.json'), 'utf8'))
const TYPES = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8')

function camel(name, unit) {
  const [head, ...rest] = name.split('_')
  return head + rest.map((w) => w[0].toUpperCase() + w.slice(1)).join('') + (unit === 'duration' ? 'Ms' : '')
}

/** The surface's options of `call`, as Node spells them. */
function expected(call) {
  return Object.entries(SURFACE.calls[call])
    .filter(([, spec]) => (spec.languages ?? ['node']).includes('node'))
    .map(([name, spec]) => camel(name, spec.unit))
    .sort()
}

/** The member names of `interface name { ... }` in index.d.ts. */
function members(name) {
  const body = new RegExp(`interface ${name}(?: extends \\w+)? \\{([\\s\\S]*?)\\n\\}`).exec(TYPES)
  assert.ok(body, `index.d.ts has no interface ${name}`)
  return [...body[1].matchAll(/^\s{2}(\w+)\??:/gm)].map((m) => m[1]).sort()
}

const CALLS = { worker: 'worker', retry: 'retry', publish: 'publish', app: 'app', task: 'task', apply_async: 'applyAsync', signature: 'signature', dead_letters: 'deadLetters', upsert_schedule: 'upsertSchedule' }

test('every option of the surface is checked by name, and none else', () => {
  for (const [call, node] of Object.entries(CALLS)) {
    assert.deepEqual([...KNOWN[node]].sort(), expected(call), `${call} (${node})`)
  }
})

test("the defaults are the core's, and the surface's", () => {
  // The facade writes none: DEFAULTS comes from the core (pillarbox::surface).
  for (const [call, values] of Object.entries(DEFAULTS)) {
    const snake = call.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
    for (const [name, value] of Object.entries(values)) {
      const entry = Object.entries(SURFACE.calls[snake]).find(([n, spec]) => camel(n, spec.unit) === name)
      assert.ok(entry, `${call}.${name} is not in the surface`)
      const [, spec] = entry
      const want = spec.unit === 'duration' && spec.default !== null ? spec.default * 1000 : spec.default
      assert.equal(value, want, `${call}.${name}`)
    }
  }
  assert.equal(DEFAULTS.worker.leaseMs, 30000)
})

test('the types declare every option of the surface', () => {
  assert.deepEqual(members('WorkerOptions'), expected('worker'))
  assert.deepEqual(members('RetryPolicy'), expected('retry'))
  assert.deepEqual(members('PublishOptions'), expected('publish'))
  assert.deepEqual(members('ApplyOptions'), expected('apply_async'))
  assert.deepEqual(members('ScheduleOptions'), expected('upsert_schedule'))
  const codes = /export type ErrorCode =([\s\S]*?)\n\n/.exec(TYPES)[1]
  assert.deepEqual([...codes.matchAll(/'([A-Z_]+)'/g)].map((m) => m[1]), SURFACE.error_codes)
})

test('stats records have the fields of the surface', async () => {
  const broker = await connect(URLS.memory())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  const worker = new Worker(broker, t, 'g', async () => {})
  assert.deepEqual(Object.keys(worker.stats()).sort(), SURFACE.worker_stats.map((f) => camel(f)).sort())
  const stats = await broker.inspect(t, 'g')
  const fields = SURFACE.group_stats.map((f) => camel(f, f === 'oldest_age' ? 'duration' : undefined)).sort()
  // Unknown figures are left out of the object (undefined), so compare with the declared type as well.
  assert.deepEqual(members('GroupStats'), fields)
  const capabilities = SURFACE.capabilities.map((f) => camel(f, f === 'stats_delay' ? 'duration' : undefined)).sort()
  assert.deepEqual(members('Capabilities'), capabilities)
  assert.deepEqual(Object.keys(broker.capabilities()).sort(), capabilities)
  assert.deepEqual(members('Failures'), SURFACE.failures.map((f) => camel(f)).sort())
  for (const key of Object.keys(stats)) assert.ok(fields.includes(key), `inspect() has ${key}`)
  await broker.close()
})
