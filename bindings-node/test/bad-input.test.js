'use strict'
// Bad values for every option of a kind (numbers, durations, strings), generated from the surface every
// language is checked against (tests/parity/surface.json): each is refused
// with INVALID_OPTION naming the option as Node spells it, before anything
// starts or is published. The Python package runs the same cases
// (tests/test_bad_input.py). Then the payloads a bug hands to publish.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { connect, Worker, App, PillarboxError } = require('..')
const { URLS, topic } = require('./support.js')

const SURFACE = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'tests/parity/surface.json'), 'utf8'))

function camel(name, unit) {
  const [head, ...rest] = name.split('_')
  return head + rest.map((w) => w[0].toUpperCase() + w.slice(1)).join('') + (unit === 'duration' ? 'Ms' : '')
}

/** What a typo or a bug puts where this kind of option belongs (durations in milliseconds). */
function badValues(spec) {
  switch (spec.kind) {
    case 'count': {
      const values = [-1, '4', 1.5, true, 2 ** 53]
      if (spec.min > 0) values.push(spec.min - 1)
      if (spec.max !== undefined) values.push(spec.max + 1)
      return values
    }
    case 'duration':
      return [-1, -0.5, '1', NaN, Infinity, true]
    case 'number':
      return ['2', NaN, Infinity, true]
    case 'string':
      return [5, Buffer.from('x'), ['a'], true]
    default:
      throw new Error(`no bad values for kind ${spec.kind}`)
  }
}

function cases(call) {
  return Object.entries(SURFACE.calls[call])
    .filter(([, spec]) => spec.kind && (spec.languages ?? ['node']).includes('node'))
    .flatMap(([name, spec]) => badValues(spec).map((value) => [camel(name, spec.unit), value]))
}

async function refused(name, make) {
  await assert.rejects(
    async () => make(),
    (e) => {
      assert.ok(e instanceof PillarboxError, `${name}: ${e}`)
      assert.equal(e.code, 'INVALID_OPTION', `${name}: ${e.message}`)
      assert.ok(e.message.includes(name), `${name}: ${e.message}`)
      return true
    },
  )
}

test('every option of a kind refuses what a typo or a bug puts there, naming it', async () => {
  const broker = await connect(URLS.memory())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  const handler = async () => {}
  let tried = 0
  for (const [name, value] of cases('worker')) {
    await refused(name, () => new Worker(broker, t, 'g', handler, { [name]: value }))
    tried++
  }
  for (const [name, value] of cases('retry')) {
    await refused(name, () => new Worker(broker, t, 'g', handler, { retry: { [name]: value } }))
    tried++
  }
  for (const [name, value] of cases('publish')) {
    await refused(name, () => broker.publish(t, 'x', { [name]: value }))
    tried++
  }
  for (const [name, value] of cases('app')) {
    await refused(name, () => new App(URLS.memory(), { [name]: value }))
    tried++
  }
  const app = new App(URLS.memory())
  for (const [name, value] of [...cases('task'), ...cases('signature')]) {
    await refused(name, () => app.task('n', async () => {}, { [name]: value }))
    await refused(name, () => app.signature('elsewhere.task', { [name]: value }))
    tried++
  }
  assert.equal(app.tasks.size, 0)
  for (const [name, value] of cases('upsert_schedule')) {
    const base = name === 'cron' || name === 'zone' ? { everyMs: 60_000 } : { cron: '0 3 * * *' }
    if (name === 'misfireCap') base.misfire = 'all'
    await refused(name, () => broker.upsertSchedule('s', 't', 'x', { ...base, [name]: value }))
    tried++
  }
  assert.deepEqual(await broker.schedules(), [])
  assert.ok(tried > 90, `${tried} cases`)
  const stats = await broker.inspect(t, 'g')
  assert.equal(stats.ready + stats.waiting, 0)
  await broker.close()
})

test('payloads a bug hands to publish are refused with a clear error, and nothing is published', async () => {
  const broker = await connect(URLS.memory())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  for (const [payload, why] of [
    [null, /not null/],
    [undefined, /not undefined/],
    [12, /not a number/],
    [{ text: 'hi' }, /payload/],
    [[['nested']], /not an array/],
    [new ArrayBuffer(4), /ArrayBuffer/],
  ]) {
    await assert.rejects(broker.publish(t, payload), (e) => {
      assert.ok(e instanceof TypeError, `${String(payload)}: ${e}`)
      assert.match(e.message, why)
      assert.doesNotMatch(e.message, /Cannot read properties/)
      return true
    })
  }
  await assert.rejects(broker.publish(t, 'a\ud800b'), { code: 'INVALID_MESSAGE', message: /lone surrogate/ })
  await assert.rejects(broker.publish(t, ['ok', 'a\udc00']), { code: 'INVALID_MESSAGE' })
  const source = new Uint8Array(8)
  if (typeof source.buffer.transfer === 'function') {
    source.buffer.transfer()
    await assert.rejects(broker.publish(t, source), { code: 'INVALID_MESSAGE', message: /detached/ })
  }
  const stats = await broker.inspect(t, 'g')
  assert.equal(stats.ready, 0)
  await broker.close()
})

test('topic and group names that are not strings are TypeErrors naming them, not conversion errors', async () => {
  const broker = await connect(URLS.memory())
  for (const [call, name] of [
    [() => broker.publish(5, 'x'), 'topic'],
    [() => broker.ensureGroup('t', null), 'group'],
    [() => broker.inspect({}, 'g'), 'topic'],
    [() => broker.groups(['t']), 'topic'],
    [() => broker.deadLetters('t', 5), 'group'],
    [() => broker.redrive(undefined, 'g'), 'topic'],
    [() => broker.purge('t', true), 'group'],
    [() => new Worker(broker, 5, 'g', async () => {}), 'topic'],
    [() => new Worker({}, 't', 'g', async () => {}), 'broker'],
    [() => connect(5), 'url'],
    [() => new App(5), 'url'],
    [() => new App(URLS.memory()).task(5, async () => {}), 'a task name'],
    [() => new App(URLS.memory()).signature(null), 'a task name'],
  ]) {
    await assert.rejects(async () => call(), (e) => {
      assert.ok(e instanceof TypeError, `${name}: ${e}`)
      assert.ok(e.message.startsWith(`${name} must be`), e.message)
      return true
    })
  }
  await broker.close()
})
