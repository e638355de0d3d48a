'use strict'
// Option names: a misspelt or unknown option is refused with INVALID_OPTION
// naming it, in every call that takes options, before anything is sent.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { connect, Worker, App, PillarboxError, setLogger } = require('..')
const { URLS, topic, runUntil } = require('./support.js')

/** Asserts that `fn` throws or rejects with INVALID_OPTION naming `name`. */
async function refuses(fn, name) {
  await assert.rejects(
    async () => fn(),
    (e) => {
      assert.ok(e instanceof PillarboxError, `${e}`)
      assert.equal(e.code, 'INVALID_OPTION')
      assert.ok(e.message.includes(`\`${name}\``), e.message)
      return true
    },
  )
}

test('a misspelt option is refused with its name and the one it was probably meant to be', async () => {
  const broker = await connect(URLS.memory())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  const handler = async () => {}
  await refuses(() => new Worker(broker, t, 'g', handler, { concurency: 4 }), 'concurency')
  await assert.rejects(
    async () => new Worker(broker, t, 'g', handler, { concurency: 4 }),
    /did you mean `concurrency`\?/,
  )
  await refuses(() => new Worker(broker, t, 'g', handler, { retry: { maxRetrys: 2 } }), 'retry.maxRetrys')
  await refuses(() => new Worker(broker, t, 'g', handler, { retry: 3 }), 'retry')
  await refuses(() => new Worker(broker, t, 'g', handler, 'fast'), 'worker options')
  // null is unset, as None is in Python.
  new Worker(broker, t, 'g', handler, null)
  new Worker(broker, t, 'g', handler, { concurrency: null, retry: null, consumerName: null })
  await broker.publish(t, 'unset', { key: null, headers: null, delayMs: null })
  await refuses(() => broker.publish(t, 'x', { idempotencykey: 'k' }), 'idempotencykey')
  await refuses(() => broker.publish(t, { payload: 'x', delay: 5 }), 'delay')
  await refuses(() => broker.publish(t, ['x', { payload: 'y', kye: 'k' }]), 'kye')
  await refuses(() => broker.publish(t, ['x'], { key: 'k' }), 'key')
  await refuses(() => broker.deadLetters(t, 'g', { limt: 5 }), 'limt')
  await refuses(() => broker.redrive(t, 'g', { perSec: 5 }), 'perSec')
  await refuses(() => broker.purge(t, 'g', { kind: 'x' }), 'kind')
  await refuses(() => connect(URLS.memory(), { timeout: 5 }), 'connect options')
  await refuses(() => setLogger(console, { levle: 'info' }), 'levle')

  const app = new App(URLS.memory())
  await refuses(() => new App(URLS.memory(), { defaultTopc: 'x' }), 'defaultTopc')
  await refuses(() => app.task('t', handler, { retries: 2 }), 'retries')
  await refuses(() => app.task('t', handler, { retry: { max_retries: 2 } }), 'retry.max_retries')
  const task = app.task('t', handler)
  await refuses(() => task.applyAsync([], { countdown: 5 }), 'countdown')
  await refuses(() => app.signature('elsewhere', { topc: 'x' }), 'topc')
  await refuses(() => app.workers({ concurrencyy: 2 }), 'concurrencyy')

  // Nothing was published by the refused calls.
  const stats = await broker.inspect(t, 'g')
  assert.equal(stats.ready + stats.waiting, 1, 'only the message with unset options')
  await broker.close()
})

test('workers of two processes share an idempotency store named by URL', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pb-node-store-'))
  const store = `sqlite://${path.join(dir, 'keys.db')}`
  const broker = await connect(URLS.memory())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  await broker.publish(t, 'first', { idempotencyKey: 'K' })
  let runs = 0
  const first = new Worker(broker, t, 'g', async () => void runs++, { idempotencyStore: store, pollWaitMs: 50 })
  await runUntil(first, () => first.stats().succeeded === 1)

  // Another broker and worker, as another process would have: the key is done in the shared store.
  const other = await connect(URLS.memory())
  await other.ensureGroup(t, 'g')
  await other.publish(t, 'again', { idempotencyKey: 'K' })
  const second = new Worker(other, t, 'g', async () => void runs++, { idempotencyStore: store, pollWaitMs: 50 })
  await runUntil(second, () => second.stats().duplicates === 1)
  assert.equal(runs, 1)

  await assert.rejects(
    async () => new Worker(broker, t, 'g', async () => {}, { idempotencyStore: 'bogus://x' }),
    { code: 'UNKNOWN_SCHEME' },
  )
  await broker.close()
  await other.close()
})

test("a task registered elsewhere is called by name, on the app's topic or its own", async () => {
  const url = URLS.memory()
  const app = new App(url)
  const remote = app.signature('reports.build', { topic: 'reports' })
  assert.equal(remote.topic, 'reports')
  await remote.delay(7)
  const broker = await app.broker()
  // The call went to the group that runs the topic's tasks, made before it was published.
  assert.deepEqual(await broker.groups('reports'), ['workers'])
  const stats = await broker.inspect('reports', 'workers')
  assert.equal(stats.ready, 1)
  await broker.close()
})

test('a header value that is not a string is refused with INVALID_MESSAGE naming it, and nothing is published', async () => {
  const broker = await connect(URLS.memory())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  for (const headers of [{ n: 1 }, { n: null }, { n: { deep: 'x' } }, ['a'], 'a=b']) {
    await assert.rejects(broker.publish(t, 'x', { headers }), (e) => {
      assert.equal(e.code, 'INVALID_MESSAGE', `${JSON.stringify(headers)}: ${e.message}`)
      return true
    })
    await assert.rejects(broker.publish(t, ['ok', { payload: 'x', headers }]), { code: 'INVALID_MESSAGE' })
  }
  await assert.rejects(broker.publish(t, 'x', { headers: { count: 3 } }), /header `count` must be a string, not number/)
  const stats = await broker.inspect(t, 'g')
  assert.equal(stats.ready, 0)
  await broker.close()
})

test('job.text() and job.json() of a payload that is not UTF-8 or not JSON throw INVALID_MESSAGE', async () => {
  const broker = await connect(URLS.memory())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  await broker.publish(t, [Buffer.from([0x68, 0xff, 0x69]), Buffer.from('{"a": ')])
  const seen = []
  const worker = new Worker(broker, t, 'g', async (job) => {
    for (const read of ['text', 'json']) {
      try {
        job[read]()
        seen.push(`${read}: read`)
      } catch (e) {
        seen.push(`${read}: ${e.code} ${e.message}`)
      }
    }
  }, { pollWaitMs: 50 })
  await runUntil(worker, () => worker.stats().succeeded === 2)
  assert.deepEqual(seen, [
    'text: INVALID_MESSAGE invalid message: the payload is not valid UTF-8',
    'json: INVALID_MESSAGE invalid message: the payload is not valid UTF-8',
    'text: read',
    `json: INVALID_MESSAGE invalid message: the payload is not JSON (${jsonError('{"a": ')})`,
  ])
  await broker.close()
})

function jsonError(text) {
  try {
    JSON.parse(text)
  } catch (e) {
    return e.message
  }
}
