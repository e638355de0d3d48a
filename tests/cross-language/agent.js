'use strict'
// The Node side of the cross-language matrix (see matrix.py): reads JSON
// requests on stdin, one a line, runs them concurrently with the Node
// package's public API, and answers on stdout with the same id. The Python
// (agent.py) and Rust (agent.rs) agents answer the same requests.

const readline = require('node:readline')
const fs = require('node:fs')
const { connect, Worker, Fatal, App } = require('pillarbox')

const brokers = new Map()
const apps = new Map()
const workers = new Map()

function broker(url) {
  if (!brokers.has(url)) brokers.set(url, connect(url))
  return brokers.get(url)
}

function app(url, topic) {
  const key = `${url} ${topic}`
  if (!apps.has(key)) apps.set(key, new App(url, { defaultTopic: topic }))
  return apps.get(key)
}

class Flaky extends Error {
  constructor(message) {
    super(message)
    this.name = 'Flaky'
  }
}

function observe(job) {
  const m = job.message
  return {
    id: m.id,
    payload: m.payload.toString('hex'),
    key: m.key ?? null,
    idempotency_key: m.idempotencyKey ?? null,
    headers: m.headers,
    content_type: m.contentType ?? null,
    traceparent: m.traceparent ?? null,
    tracestate: m.tracestate ?? null,
    attempt: job.attempt,
    published_at: m.publishedAt.getTime(),
    deliver_at: m.deliverAt ? m.deliverAt.getTime() : null,
    failures: m.failures ? { kind: m.failures.lastErrorKind, message: m.failures.lastError } : null,
    received_at: Date.now(),
  }
}

function handler(r, seen) {
  return async (job) => {
    seen.push(observe(job))
    if (r.behaviour === 'fail_once' && job.attempt === 1) throw new Flaky('first attempt fails')
    if (r.behaviour === 'fatal') throw new Fatal('no retry can fix this', { kind: 'Rejected' })
    if (r.behaviour === 'effect') {
      await new Promise((resolve) => setTimeout(resolve, r.sleep_ms ?? 0))
      fs.appendFileSync(r.effects, `${job.message.idempotencyKey} node\n`)
    }
  }
}

function stats(worker) {
  const s = worker.stats()
  return { succeeded: s.succeeded, retried: s.retried, dead_lettered: s.deadLettered, duplicates: s.duplicates }
}

const QUICK = { pollWaitMs: 200, retry: { maxRetries: 3, initialDelayMs: 200, jitter: 0 } }

async function start(r) {
  const seen = []
  const options = { ...QUICK, concurrency: r.concurrency ?? 1, prefetch: 0 }
  if (r.store) options.idempotencyStore = r.store
  if (r.busy_key_delay_ms != null) options.busyKeyDelayMs = r.busy_key_delay_ms
  let worker
  if (r.behaviour === 'tasks') {
    const tasks = new App(r.url, { defaultTopic: r.topic })
    // A JavaScript task gets the keyword arguments, when there are any, as one last argument.
    tasks.task('matrix.record', (...args) => {
      seen.push({ args })
    })
    ;[worker] = await tasks.workers(options)
  } else {
    worker = new Worker(await broker(r.url), r.topic, r.group, handler(r, seen), options)
  }
  workers.set(r.name, { worker, seen, running: worker.run() })
  return null
}

async function stop(r) {
  const { worker, seen, running } = workers.get(r.name)
  workers.delete(r.name)
  worker.shutdown()
  await running
  return { seen, stats: stats(worker) }
}

async function publish(r) {
  const m = r.message
  const at = Date.now()
  const id = await (await broker(r.url)).publish(r.topic, Buffer.from(m.payload, 'hex'), {
    key: m.key ?? undefined,
    idempotencyKey: m.idempotency_key ?? undefined,
    headers: m.headers ?? undefined,
    contentType: m.content_type ?? undefined,
    delayMs: m.delay_ms ?? undefined,
    traceparent: m.traceparent ?? undefined,
    tracestate: m.tracestate ?? undefined,
  })
  return { id, at }
}

async function deadLetters(r) {
  const found = await (await broker(r.url)).deadLetters(r.topic, r.group)
  return found.map((d) => ({
    message_id: d.message.id,
    payload: d.message.payload.toString('hex'),
    attempt: d.message.attempt,
    topic: d.reason.topic,
    group: d.reason.group,
    attempts: d.reason.attempts,
    cause: d.reason.cause,
    error_kind: d.reason.errorKind,
    error_message: d.reason.errorMessage,
  }))
}

const OPS = {
  ensure_group: async (r) => (await broker(r.url)).ensureGroup(r.topic, r.group).then(() => null),
  publish,
  task_delay: (r) => app(r.url, r.topic).signature(r.task).applyAsync(r.args, { kwargs: r.kwargs }),
  start,
  stats: async (r) => stats(workers.get(r.name).worker),
  stop,
  dead_letters: deadLetters,
  redrive: async (r) => (await broker(r.url)).redrive(r.topic, r.group),
}

async function serve(request) {
  let answer
  try {
    answer = { id: request.id, ok: (await OPS[request.op](request)) ?? null }
  } catch (e) {
    answer = { id: request.id, error: `${e.code ?? e.name}: ${e.message}` }
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`)
}

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (line.trim()) serve(JSON.parse(line))
})
lines.on('close', async () => {
  for (const name of [...workers.keys()]) await stop({ name })
  for (const b of brokers.values()) await (await b).close()
  for (const a of apps.values()) if (a._broker) await (await a.broker()).close()
  process.exit(0)
})
