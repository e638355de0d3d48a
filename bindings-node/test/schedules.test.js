'use strict'
// Schedules from Node: kept by the broker, listed, paused, resumed and
// removed; schedulers publishing each tick once however many run; bad
// definitions refused naming the option. Every backend keeps them.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { connect, Worker, Scheduler, PillarboxError } = require('..')
const { URLS, BACKENDS, topic } = require('./support.js')

const unique = (name) => `${name}-${Math.random().toString(16).slice(2, 10)}`

for (const backend of BACKENDS) {
  test(`${backend}: upsert, list, pause, resume, remove`, async () => {
    const broker = await connect(URLS[backend]())
    const name = unique('nightly')
    const t = topic()
    const berlin = { cron: '30 2 * * *', zone: 'Europe/Berlin' }
    assert.equal(await broker.upsertSchedule(name, t, 'import', berlin), 'created')
    assert.equal(await broker.upsertSchedule(name, t, 'import', berlin), 'unchanged')
    assert.equal(await broker.upsertSchedule(name, t, 'import', { ...berlin, cron: '0 3 * * *' }), 'updated')
    const info = (await broker.schedules()).find((s) => s.name === name)
    assert.equal(info.cron, '0 3 * * *')
    assert.equal(info.zone, 'Europe/Berlin')
    assert.equal(info.everyMs, null)
    assert.equal(info.misfire, 'once')
    assert.equal(info.paused, false)
    assert.ok(info.nextRun > new Date() && info.nextRun.getUTCMinutes() === 0)
    assert.equal(info.lastRun, null)
    assert.equal(await broker.pauseSchedule(name), true)
    const paused = (await broker.schedules()).find((s) => s.name === name)
    assert.equal(paused.paused, true)
    assert.equal(paused.nextRun, null)
    assert.equal(await broker.resumeSchedule(name), true)
    // Run now: a message at once, the schedule's state as it was.
    await broker.ensureGroup(t, 'g')
    const id = await broker.runScheduleNow(name)
    assert.ok(typeof id === 'string' && id.length > 0)
    assert.equal(await broker.runScheduleNow(`${name}-missing`), null)
    assert.equal((await broker.schedules()).find((s) => s.name === name).lastRun, null)
    assert.equal(await broker.removeSchedule(name), true)
    assert.equal(await broker.removeSchedule(name), false)
    await broker.close()
  })

  test(`${backend}: three schedulers publish each tick once`, async () => {
    // One database for all (each call of URLS.sqlite() names a new file).
    const url = URLS[backend]()
    const broker = await connect(url)
    const t = topic()
    await broker.ensureGroup(t, 'g')
    const name = unique('every-second')
    // `all`: a pass held up past a tick on a busy machine still publishes it.
    await broker.upsertSchedule(name, t, 'tick', { everyMs: 1000, key: 'k', misfire: 'all' })
    const brokers = backend === 'memory' ? [broker, broker, broker] : await Promise.all([1, 2, 3].map(() => connect(url)))
    const schedulers = brokers.map((b) => new Scheduler(b))
    const runs = schedulers.map((s) => s.run())
    const seen = []
    const worker = new Worker(broker, t, 'g', async (job) => {
      seen.push(job.message)
    }, { concurrency: 4 })
    const working = worker.run()
    const deadline = Date.now() + 30_000
    while (seen.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    for (const s of schedulers) s.shutdown()
    await Promise.all(runs)
    await new Promise((r) => setTimeout(r, 1500))
    worker.shutdown()
    await working
    await broker.removeSchedule(name)
    const ticks = seen.map((m) => m.scheduledFor.getTime()).sort((a, b) => a - b)
    console.log(`${backend}: ${ticks.length} ticks handled, ${new Set(ticks).size} distinct`)
    assert.ok(ticks.length >= 4, `${ticks}`)
    assert.equal(new Set(ticks).size, ticks.length, 'a tick handled twice')
    assert.ok(ticks.every((tick, i) => i === 0 || tick - ticks[i - 1] === 1000), `a tick missing: ${ticks}`)
    for (const m of seen) {
      assert.equal(m.schedule, name)
      assert.equal(m.key, 'k')
      assert.equal(m.idempotencyKey, `schedule:${name}:${m.scheduledFor.getTime()}`)
    }
    for (const b of new Set(brokers)) await b.close()
  })
}

test('bad definitions are refused naming the option, and nothing is kept', async () => {
  const broker = await connect(URLS.memory())
  for (const [options, option] of [
    [{ cron: '61 * * * *' }, 'cron'],
    [{ cron: '0 3 * * *', zone: 'Mars/Olympus' }, 'zone'],
    [{ everyMs: 0 }, 'everyMs'],
    [{ everyMs: 500 }, 'everyMs'],
    [{ everyMs: -1 }, 'everyMs'],
    [{ everyMs: '10' }, 'everyMs'],
    [{}, 'cron'],
    [{ cron: '* * * * *', everyMs: 60_000 }, 'cron'],
    [{ everyMs: 60_000, zone: 'UTC' }, 'zone'],
    [{ cron: '* * * * *', misfire: 'sometimes' }, 'misfire'],
    [{ cron: '* * * * *', misfire: 'all', misfireCap: 0 }, 'misfireCap'],
    [{ cron: 5 }, 'cron'],
    [{ crn: '* * * * *' }, 'crn'],
  ]) {
    await assert.rejects(broker.upsertSchedule('s', 't', 'x', options), (e) => {
      assert.ok(e instanceof PillarboxError, `${JSON.stringify(options)}: ${e}`)
      assert.equal(e.code, 'INVALID_OPTION', e.message)
      assert.equal(e.option, option, `${JSON.stringify(options)}: ${e.message}`)
      return true
    })
  }
  assert.deepEqual(await broker.schedules(), [])
  await broker.close()
})

test('an app schedules a task and its worker runs the ticks', async () => {
  const { App } = require('..')
  const url = URLS.sqlite()
  const app = new App(url)
  const calls = []
  const build = app.task('reports.build', async (kind) => {
    calls.push(kind)
  }, { topic: 'reports' })
  const options = { everyMs: 1000, args: ['daily'], misfire: 'all' }
  assert.equal(await app.schedule('reports-every-second', build, options), 'created')
  assert.equal(await app.schedule('reports-every-second', 'reports.build', options), 'unchanged')
  const runners = await app.runners({ concurrency: 2 })
  assert.ok(runners.some((r) => r instanceof Scheduler), 'the worker runs a scheduler by default')
  assert.ok(!(await app.runners({ scheduler: false })).some((r) => r instanceof Scheduler))
  const running = runners.map((r) => r.run())
  const deadline = Date.now() + 30_000
  while (calls.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  for (const r of runners) r.shutdown()
  await Promise.all(running)
  assert.deepEqual(calls.slice(0, 2), ['daily', 'daily'])
  const [info] = await (await app.broker()).schedules()
  assert.equal(info.topic, 'reports')
  assert.ok(info.lastRun instanceof Date)
  await (await app.broker()).close()
})
