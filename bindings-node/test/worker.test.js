'use strict'
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const path = require('node:path')
const { connect, Worker, Retry } = require('..')
const { URLS, BACKENDS, topic, until, runUntil } = require('./support')

const quick = { retry: { maxRetries: 2, initialDelayMs: 50, jitter: 0 }, pollWaitMs: 50 }

test('a handler retries after the delay it asks for, and sees its attempt', async () => {
  const broker = await connect(URLS.sqlite())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  await broker.publish(t, 'flaky')
  const seen = []
  const worker = new Worker(broker, t, 'g', async (job) => {
    seen.push([job.attempt, Date.now()])
    if (job.attempt === 1) throw new Retry('not yet', { afterMs: 400 })
  }, quick)
  await runUntil(worker, () => worker.stats().succeeded === 1)
  assert.equal(seen.length, 2)
  assert.ok(seen[1][1] - seen[0][1] >= 390)
  await broker.close()
})

test('a handler sees every field of its job, whatever else its batch holds', async () => {
  // Jobs cross from the addon in one buffer per batch: payloads of every
  // size (empty, multi-byte text, binary), fields set and unset, several
  // headers, and the failure history of an earlier attempt must all come
  // back as published.
  const broker = await connect(URLS.sqlite())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  const binary = Buffer.from([0, 255, 1, 254, 0])
  const deliverAt = new Date(Date.now() + 50)
  const [full, empty, bytes, late] = await broker.publish(t, [
    {
      payload: 'naïve ☃ résumé',
      key: 'k-é',
      idempotencyKey: 'i-1',
      headers: { tenant: 'acme', 'x-ü': 'ünïcödé', empty: '' },
      contentType: 'text/plain; charset=utf-8',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      tracestate: 'pb=1',
    },
    '',
    binary,
    { payload: 'later', deliverAt },
  ])
  const seen = new Map()
  const worker = new Worker(broker, t, 'g', async (job) => {
    seen.set(`${job.id}/${job.attempt}`, job)
    if (job.id === bytes && job.attempt === 1) throw new RangeError('first time fails')
  }, quick)
  await runUntil(worker, () => worker.stats().succeeded === 4)

  const a = seen.get(`${full}/1`)
  assert.equal(a.text(), 'naïve ☃ résumé')
  assert.equal(a.topic, t)
  assert.equal(a.group, 'g')
  assert.equal(a.maxAttempts, 3)
  assert.equal(a.deadline, null)
  assert.deepEqual(
    { ...a.message, payload: a.message.payload.toString(), publishedAt: undefined },
    {
      id: full,
      payload: 'naïve ☃ résumé',
      key: 'k-é',
      idempotencyKey: 'i-1',
      contentType: 'text/plain; charset=utf-8',
      headers: { tenant: 'acme', 'x-ü': 'ünïcödé', empty: '' },
      attempt: 1,
      publishedAt: undefined,
      deliverAt: null,
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      tracestate: 'pb=1',
      schedule: null,
      scheduledFor: null,
      failures: null,
    },
  )
  assert.ok(Math.abs(a.message.publishedAt - Date.now()) < 60_000)

  const e = seen.get(`${empty}/1`)
  assert.equal(e.payload.length, 0)
  assert.equal(e.message.key, null)
  assert.equal(e.message.traceparent, null)
  assert.deepEqual(e.message.headers, {})

  const retried = seen.get(`${bytes}/2`)
  assert.deepEqual(retried.payload, binary)
  assert.equal(retried.message.attempt, 2)
  assert.equal(retried.message.failures.lastErrorKind, 'RangeError')
  assert.equal(retried.message.failures.lastError, 'first time fails')
  assert.ok(retried.message.failures.firstFailedAt instanceof Date)
  assert.ok(retried.message.failures.lastFailedAt >= retried.message.failures.firstFailedAt)

  assert.equal(seen.get(`${late}/1`).message.deliverAt.getTime(), deliverAt.getTime())
  await broker.close()
})

test('the bare payloads of a batch arrive whole and in order', async () => {
  // A batch of bare payloads crosses as one buffer and the lengths.
  const broker = await connect(URLS.sqlite())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  const backing = Buffer.from('..view..')
  const payloads = ['', 'naïve ☃', backing.subarray(2, 6), new Uint8Array([0, 1, 2]), Buffer.alloc(3000, 'z'), '']
  const ids = await broker.publish(t, payloads)
  assert.equal(ids.length, payloads.length)
  assert.equal(new Set(ids).size, payloads.length)
  const seen = []
  const worker = new Worker(broker, t, 'g', async (job) => seen.push([job.id, Buffer.from(job.payload)]), quick)
  await runUntil(worker, () => seen.length === payloads.length)
  assert.deepEqual(seen.map(([id]) => id), ids)
  assert.deepEqual(seen.map(([, payload]) => payload), payloads.map((p) => Buffer.from(p)))
  await broker.close()
})

test('errors are classified as the worker says', async () => {
  const broker = await connect(URLS.sqlite())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  await broker.publish(t, ['TypeError', 'RangeError', 'SyntaxError'])
  const errors = { TypeError, RangeError, SyntaxError }
  const worker = new Worker(broker, t, 'g', async (job) => {
    throw new errors[job.text()]('boom')
  }, { ...quick, retryFor: [RangeError, SyntaxError], fatalFor: [SyntaxError] })
  await runUntil(worker, () => worker.stats().deadLettered === 3)
  const reasons = Object.fromEntries((await broker.deadLetters(t, 'g')).map((d) => [d.reason.errorKind, d.reason]))
  assert.equal(reasons.TypeError.cause, 'not_retryable')
  assert.equal(reasons.SyntaxError.cause, 'not_retryable')
  assert.equal(reasons.RangeError.cause, 'retries_exhausted')
  assert.equal(reasons.RangeError.attempts, 3)
  await broker.close()
})

test('a job past its timeout sees its signal aborted and knew its deadline', async () => {
  const broker = await connect(URLS.sqlite())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  await broker.publish(t, 'slow')
  let aborted = false
  let deadline = null
  const started = Date.now()
  const worker = new Worker(broker, t, 'g', async (job) => {
    deadline = job.deadline
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 30000)
      job.signal.addEventListener('abort', () => {
        aborted = true
        clearTimeout(timer)
        resolve()
      })
    })
  }, { ...quick, retry: { maxRetries: 0 }, handlerTimeoutMs: 300 })
  await runUntil(worker, () => worker.stats().deadLettered === 1 && aborted)
  assert.ok(deadline instanceof Date && deadline.getTime() >= started + 300)
  assert.equal((await broker.deadLetters(t, 'g'))[0].reason.errorKind, 'timeout')
  await broker.close()
})

test('handlers still running at the end of the shutdown grace are aborted', async () => {
  const broker = await connect(URLS.sqlite())
  const t = topic()
  await broker.ensureGroup(t, 'g')
  await broker.publish(t, 'stuck')
  let running = false
  let aborted = false
  const worker = new Worker(broker, t, 'g', async (job) => {
    running = true
    await new Promise((resolve) => job.signal.addEventListener('abort', () => resolve((aborted = true))))
  }, { ...quick, shutdownGraceMs: 200 })
  const run = worker.run()
  await until(() => running)
  worker.shutdown()
  await run
  await until(() => aborted, 5000)
  assert.equal(worker.stats().released, 1)
  await broker.close()
})

// Every backend several processes share: a lease holds a message on the
// embedded backend and Redis, the connection on RabbitMQ and Kafka.
const CROSS_PROCESS = BACKENDS.filter((b) => ['sqlite', 'redis', 'amqp', 'kafka'].includes(b))

for (const backend of CROSS_PROCESS) {
  test(`${backend}: a handler that blocks the event loop past its lease keeps its message`, async () => {
    // Leases are renewed on the core's threads (the connection holds the
    // message on RabbitMQ and Kafka): the second worker never gets it.
    const url = URLS[backend]()
    const first = await connect(url)
    const second = await connect(url)
    const t = topic()
    await first.ensureGroup(t, 'g')
    await first.publish(t, 'cpu-bound')
    const block = async () => {
      const until = Date.now() + 2500
      while (Date.now() < until) {}
    }
    const workers = [first, second].map((b) => new Worker(b, t, 'g', block, { leaseMs: 600, pollWaitMs: 50 }))
    const runs = workers.map((w) => w.run())
    await until(() => workers.reduce((n, w) => n + w.stats().succeeded, 0) === 1)
    await new Promise((r) => setTimeout(r, 1000))
    workers.forEach((w) => w.shutdown())
    await Promise.all(runs)
    assert.equal(workers.reduce((n, w) => n + w.stats().received, 0), 1)
    await first.close()
    await second.close()
  })
}

/** Resolves once `child` has printed `text`; rejects if it exits first or `limitMs` passes. */
function printed(child, text, limitMs = 60000) {
  return new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`no "${text}" from the child after ${limitMs} ms: ${out}`)), limitMs)
    child.stdout.on('data', (d) => {
      out += d
      if (out.includes(text)) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`the child exited (${code}) before printing "${text}": ${out}`))
    })
  })
}

/** Resolves with `child`'s exit code; rejects if it has not exited within `limitMs`. */
function exited(child, limitMs = 30000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the child did not exit within ${limitMs} ms`)), limitMs)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve(code)
    })
  })
}

function node(script, ...args) {
  return spawn(process.execPath, ['-e', script, ...args], { stdio: ['ignore', 'pipe', 'inherit'], cwd: path.resolve(__dirname, '..') })
}

test('a script whose worker stopped and broker closed exits by itself', async () => {
  const child = node(`
    const { connect, Worker } = require('.')
    ;(async () => {
      const broker = await connect(process.argv[1])
      await broker.ensureGroup('exit', 'g')
      await broker.publish('exit', 'one')
      const worker = new Worker(broker, 'exit', 'g', async () => {}, { pollWaitMs: 50 })
      const run = worker.run()
      while (worker.stats().succeeded < 1) await new Promise((r) => setTimeout(r, 20))
      worker.shutdown()
      await run
      await broker.close()
      console.log('done')
    })()
  `, URLS.sqlite())
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const code = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the process did not exit by itself')), 20000)
    child.on('exit', (c) => {
      clearTimeout(timer)
      resolve(c)
    })
  })
  assert.equal(code, 0)
  assert.equal(out.trim(), 'done')
})

for (const backend of CROSS_PROCESS) {
  test(`${backend}: a worker process killed mid-handler loses nothing`, async () => {
    const url = URLS[backend]()
    const broker = await connect(url)
    const t = topic()
    await broker.ensureGroup(t, 'g')
    await broker.publish(t, 'survivor')
    const child = node(`
      const { connect, Worker } = require('.')
      ;(async () => {
        const broker = await connect(process.argv[1])
        const worker = new Worker(broker, process.argv[2], 'g', async () => {
          console.log('started')
          await new Promise((r) => setTimeout(r, 60000))
        }, { leaseMs: 1000, pollWaitMs: 50 })
        await worker.run()
      })()
    `, url, t)
    await printed(child, 'started')
    child.kill('SIGKILL')
    await exited(child)
    const attempts = []
    const worker = new Worker(broker, t, 'g', async (job) => attempts.push(job.attempt), { leaseMs: 1000, pollWaitMs: 50 })
    // On Kafka the dead consumer's partitions move after its session times out.
    await runUntil(worker, () => attempts.length === 1, 60000)
    assert.deepEqual(attempts, [2])
    await broker.close()
  })
}

test("the core's events reach the logger the application chooses", async () => {
  const { setLogger, Fatal } = require('..')
  const records = []
  setLogger((level, message) => records.push([level, message]))
  try {
    const broker = await connect(URLS.sqlite())
    const t = topic()
    await broker.ensureGroup(t, 'g')
    await broker.publish(t, 'doomed')
    const worker = new Worker(broker, t, 'g', async () => {
      throw new Fatal('no')
    }, { pollWaitMs: 50 })
    await runUntil(worker, () => worker.stats().deadLettered === 1)
    await until(() => records.some(([, m]) => m.includes('dead-lettered')), 5000)
    const [level] = records.find(([, m]) => m.includes('dead-lettered'))
    assert.equal(level, 'warn')
    await broker.close()
  } finally {
    setLogger(console, { level: 'warn' })
  }
})

for (const backend of BACKENDS.filter((b) => b === 'sqlite' || b === 'redis')) {
  test(`${backend}: two worker processes racing on one idempotency key run its effect once`, async () => {
    const fs = require('node:fs')
    const os = require('node:os')
    const url = URLS[backend]()
    const broker = await connect(url)
    const t = topic()
    const effects = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pb-race-')), 'effects')
    await broker.ensureGroup(t, 'g')
    const racers = [1, 2].map(() =>
      node(`
        const fs = require('node:fs')
        const { connect, Worker } = require('.')
        ;(async () => {
          const broker = await connect(process.argv[1])
          const worker = new Worker(broker, process.argv[2], 'g', async (job) => {
            await new Promise((r) => setTimeout(r, 400))
            fs.appendFileSync(process.argv[3], job.id + '\\n')
          }, { leaseMs: 2000, pollWaitMs: 50, busyKeyDelayMs: 200 })
          process.on('SIGTERM', () => worker.shutdown())
          console.log('ready')
          await worker.run()
          await broker.close()
        })()
      `, url, t, effects),
    )
    await Promise.all(racers.map((r) => printed(r, 'ready')))
    await broker.publish(t, [{ payload: 'pay', idempotencyKey: 'pay-1' }, { payload: 'pay', idempotencyKey: 'pay-1' }])
    const deadline = Date.now() + 30000
    for (;;) {
      const s = await broker.inspect(t, 'g')
      if ((s.ready + s.inFlight + s.waiting === 0 && fs.existsSync(effects)) || Date.now() > deadline) break
      await new Promise((r) => setTimeout(r, 100))
    }
    racers.forEach((r) => r.kill('SIGTERM'))
    const codes = await Promise.all(racers.map((r) => exited(r)))
    assert.deepEqual(codes, [0, 0])
    assert.equal(fs.readFileSync(effects, 'utf8').trim().split('\n').length, 1)
    await broker.close()
  })
}
