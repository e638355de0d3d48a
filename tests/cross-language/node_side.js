// The Node half of the cross-language test: publish a task call, or run the
// worker until N calls are handled, appending what each did to OUT.
//
//   node node_side.js publish URL TOPIC
//   node node_side.js work URL TOPIC OUT N
'use strict'
const fs = require('node:fs')
const { App } = require('pillarbox')

const [mode, url, topic, out, wanted] = process.argv.slice(2)
const app = new App(url, { defaultTopic: topic })
const greet = app.task(
  'greet',
  async (who, kwargs = {}) => fs.appendFileSync(out, `node says hello ${who}${kwargs.punctuation ?? '!'}\n`),
  { idempotencyKey: (who) => `greet-${who}` },
)

;(async () => {
  if (mode === 'publish') {
    // Twice with one idempotency key: must run once on the other side.
    await greet.applyAsync(['from node'], { kwargs: { punctuation: '.' } })
    await greet.applyAsync(['from node'], { kwargs: { punctuation: '.' } })
    await (await app.broker()).close()
    return
  }
  const [worker] = await app.workers({ pollWaitMs: 50 })
  const running = worker.run()
  const deadline = Date.now() + 30000
  const done = () => worker.stats().succeeded + worker.stats().duplicates >= Number(wanted)
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  worker.shutdown()
  await running
  await (await app.broker()).close()
  process.exitCode = done() ? 0 : 1
})()
