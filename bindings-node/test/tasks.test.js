'use strict'
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { App } = require('..')
const { envelope } = require('../lib/tasks.js')
const { URLS, until } = require('./support')

test('the envelope is plain JSON, the same as Python writes', () => {
  assert.deepEqual(JSON.parse(envelope('emails.send', ['ada@example.com'], { lang: 'en' })), {
    task: 'emails.send',
    args: ['ada@example.com'],
    kwargs: { lang: 'en' },
  })
})

test('tasks run once per idempotency key, with kwargs as a last argument, and unknown ones dead-letter', async () => {
  const app = new App(URLS.sqlite())
  const seen = []
  const greet = app.task('greet', async (who, options) => seen.push(`hello ${who}${options ? options.punctuation : '!'}`), {
    idempotencyKey: (who) => `greet-${who}`,
  })
  await greet.applyAsync(['ada'], { kwargs: { punctuation: '.' } })
  await greet.delay('ada') // same key: runs once
  await greet.applyAsync(['bob'], { countdownMs: 100 })
  const broker = await app.broker()
  await broker.publish('tasks', JSON.stringify({ task: 'nobody', args: [] }))
  const [worker] = await app.workers({ pollWaitMs: 50 })
  const running = worker.run()
  await until(() => worker.stats().succeeded + worker.stats().duplicates === 3 && worker.stats().deadLettered === 1)
  worker.shutdown()
  await running
  assert.deepEqual(seen.sort(), ['hello ada.', 'hello bob!'])
  const [dead] = await broker.deadLetters('tasks', 'workers')
  assert.equal(dead.reason.errorKind, 'UnknownTask')
  await broker.close()
})
