'use strict'
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { connect, Worker, PillarboxError } = require('..')
const { URLS, BACKENDS, topic, until, runUntil } = require('./support')

async function statsWhere(broker, t, group, expect, limitMs = 8000) {
  const deadline = Date.now() + limitMs
  for (;;) {
    const s = await broker.inspect(t, group)
    if (expect(s) || Date.now() > deadline) return s
    await new Promise((r) => setTimeout(r, 100))
  }
}

for (const backend of BACKENDS) {
  test(`${backend}: publish, handle and read back every field`, async () => {
    const broker = await connect(URLS[backend]())
    const t = topic()
    await broker.ensureGroup(t, 'g')
    assert.deepEqual(await broker.groups(t), ['g'])
    const id = await broker.publish(t, 'café', {
      key: 'k1',
      idempotencyKey: 'idem-1',
      headers: { tenant: 'acme' },
      contentType: 'text/plain',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    })
    const ids = await broker.publish(t, [Buffer.from('two'), { payload: 'three', key: 'k3' }])
    assert.equal(ids.length, 2)
    const seen = []
    const worker = new Worker(broker, t, 'g', async (job) => seen.push(job), { pollWaitMs: 100 })
    await runUntil(worker, () => seen.length === 3)
    const first = seen.find((j) => j.id === id)
    assert.equal(first.text(), 'café')
    assert.equal(first.message.key, 'k1')
    assert.equal(first.message.idempotencyKey, 'idem-1')
    assert.deepEqual(first.message.headers, { tenant: 'acme' })
    assert.equal(first.message.contentType, 'text/plain')
    assert.equal(first.attempt, 1)
    assert.equal(first.maxAttempts, 4)
    assert.ok(first.message.publishedAt instanceof Date)
    assert.ok(Math.abs(first.message.publishedAt - Date.now()) < 60000)
    const s = await statsWhere(broker, t, 'g', (s) => s.ready === 0 && s.inFlight === 0)
    assert.equal(s.ready + s.inFlight + s.waiting, 0)
    await broker.close()
  })

  test(`${backend}: dead letters with their reason, redriven at a rate and purged`, async () => {
    const broker = await connect(URLS[backend]())
    const t = topic()
    await broker.ensureGroup(t, 'g')
    await broker.publish(t, ['a', 'b', 'junk'])
    const refuse = async (job) => {
      if (job.text() === 'junk') {
        const { Fatal } = require('..')
        throw new Fatal('not a message', { kind: 'Junk' })
      }
      throw new RangeError('no such customer')
    }
    const worker = new Worker(broker, t, 'g', refuse, { retry: { maxRetries: 0 }, pollWaitMs: 100 })
    await runUntil(worker, () => worker.stats().deadLettered === 3)
    const dead = await broker.deadLetters(t, 'g')
    assert.deepEqual(dead.map((d) => d.message.payload.toString()).sort(), ['a', 'b', 'junk'])
    const junk = dead.find((d) => d.message.payload.toString() === 'junk')
    assert.equal(junk.reason.cause, 'not_retryable')
    assert.equal(junk.reason.errorKind, 'Junk')
    assert.equal(junk.reason.errorMessage, 'not a message')
    const a = dead.find((d) => d.message.payload.toString() === 'a')
    assert.equal(a.reason.cause, 'retries_exhausted')
    assert.equal(a.reason.errorKind, 'RangeError')
    assert.ok(a.reason.firstFailedAt <= a.reason.lastFailedAt)
    assert.equal(await broker.purge(t, 'g', { errorKind: 'Junk' }), 1)
    const started = Date.now()
    assert.equal(await broker.redrive(t, 'g', { perSecond: 10 }), 2)
    assert.ok(Date.now() - started >= 90)
    const attempts = []
    const again = new Worker(broker, t, 'g', async (job) => attempts.push(job.attempt), { pollWaitMs: 100 })
    await runUntil(again, () => attempts.length === 2)
    assert.deepEqual(attempts, [1, 1])
    await broker.close()
  })

  test(`${backend}: bad input gets a clear error with a code, and nothing is published`, async () => {
    const broker = await connect(URLS[backend]())
    const t = topic()
    await broker.ensureGroup(t, 'g')
    const limit = broker.capabilities().maxMessageBytes
    await assert.rejects(broker.publish(t, ['small', Buffer.alloc(limit + 1)]), (e) => {
      assert.ok(e instanceof PillarboxError)
      assert.equal(e.code, 'MESSAGE_TOO_LARGE')
      // The core's fields, each a property of its own.
      assert.equal(e.limit, limit)
      assert.ok(e.size > limit, `${e.size}`)
      assert.equal(e.transient, false)
      return true
    })
    await assert.rejects(broker.publish(t, 'x', { headers: { 'pb-attempt': '9' } }), { code: 'INVALID_MESSAGE' })
    await assert.rejects(broker.publish('bad topic!', 'x'), { code: 'INVALID_MESSAGE' })
    await assert.rejects(broker.publish(t, 42), TypeError)
    for (const delayMs of [-5, -0.5, NaN, Infinity]) {
      await assert.rejects(broker.publish(t, 'x', { delayMs }), { code: 'INVALID_OPTION' })
    }
    const s = await statsWhere(broker, t, 'g', (s) => s.ready === 0)
    assert.equal(s.ready + s.waiting, 0)
    await broker.close()
  })
}

test('bad URLs and unreachable brokers reject with a code, never the password', async () => {
  await assert.rejects(connect('bogus://x'), { code: 'UNKNOWN_SCHEME', scheme: 'bogus' })
  await assert.rejects(connect('memory://?poll_ms=never'), { code: 'INVALID_OPTION', option: 'poll_ms', transient: false })
  await assert.rejects(connect('redis://user:s3cret-pw@127.0.0.1:1?connect_timeout_ms=500'), (e) => {
    assert.ok(e instanceof PillarboxError)
    assert.equal(e.code, 'CONNECT')
    assert.equal(e.transient, true)
    assert.equal(e.backend, 'redis')
    assert.ok(e.reason, 'a reason')
    assert.ok(!e.message.includes('s3cret-pw') && !e.url.includes('s3cret-pw'), e.url)
    return true
  })
})
