// Pillarbox-Node beside the Rust core, BullMQ (Redis), amqplib (RabbitMQ)
// and kafkajs (Kafka), on the same servers in one run: publish (one awaited
// call at a time, awaited batches of 100) and consume with a no-op async
// handler, 100-byte messages. Prints each rate and the ratios the goals are
// about.
//
//     bash bindings-node/benches/run.sh     # installs what it needs, then runs this
//
// Servers: the test command's (tests/run.sh), or PILLARBOX_REDIS_URL,
// PILLARBOX_AMQP_URL, PILLARBOX_KAFKA_URL. PB_BENCH_ONLY=redis,amqp,kafka
// picks backends; PB_BENCH_ONE and PB_BENCH_MANY set counts; PB_BENCH_ROUNDS
// how many times everything runs (each figure is the best of them: the
// brokers share the machine's cores, and a single run moves by a quarter).
'use strict'
const path = require('node:path')
const { randomUUID } = require('node:crypto')
const { performance } = require('node:perf_hooks')

const pillarbox = require('pillarbox')
// The core's own loops (pillarbox::baseline), from the same addon.
const native = require(path.join(path.dirname(require.resolve('pillarbox')), 'native', 'pillarbox.node'))

const URLS = {
  redis: process.env.PILLARBOX_REDIS_URL || 'redis://127.0.0.1:6390',
  amqp: process.env.PILLARBOX_AMQP_URL || 'amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673',
  kafka: process.env.PILLARBOX_KAFKA_URL || 'kafka://127.0.0.1:19092',
}
const PAYLOAD = Buffer.alloc(100, 'x')
const BATCH = 100
const ONE = Number(process.env.PB_BENCH_ONE || 3000) // published one at a time
// Published in batches, then consumed: enough that a consumer's start (a
// connection, a group to join) does not decide its rate.
const MANY = {
  redis: Number(process.env.PB_BENCH_MANY || 200_000),
  amqp: Number(process.env.PB_BENCH_MANY || 100_000),
  kafka: Number(process.env.PB_BENCH_MANY || 200_000),
}
// The same worker settings for the Rust core and Node: 64 handlers at once,
// a window of 200. Async handlers on one event loop cost little each, and
// more of them at once hide the hand-offs between the event loop and the
// core's threads (16, the Python benchmark's figure, gives Node about 0.75
// of this rate; it changes the Rust core's by less than the noise).
const CONCURRENCY = Number(process.env.PB_BENCH_CONCURRENCY || 64)
const PREFETCH = 200 - CONCURRENCY
// On Redis, Pillarbox and BullMQ each consume at every concurrency of the
// same set, and each is reported at its best (BullMQ's best of 1 and 50
// was 50; Pillarbox's default above is 64).
const REDIS_CONCURRENCIES = [50, 64]

const ROUNDS = Number(process.env.PB_BENCH_ROUNDS || 2)

const rates = new Map() // "backend|what" -> the best messages/s of the rounds
const record = (backend, what, count, seconds) => {
  const key = `${backend}|${what}`
  rates.set(key, Math.max(rates.get(key) || 0, count / seconds))
  console.error(`  ${backend} ${what}: ${Math.round(count / seconds).toLocaleString('en-US')}/s`)
}
const fresh = (prefix) => `bench.${prefix}.${randomUUID().slice(0, 8)}`
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function timed(run) {
  const started = performance.now()
  await run()
  return (performance.now() - started) / 1000
}

async function until(done, what, limitMs = 300_000) {
  const deadline = Date.now() + limitMs
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`)
    await sleep(2)
  }
}

// ---------------------------------------------------------------- Pillarbox

async function pillarboxPublish(backend) {
  const url = URLS[backend]
  const many = MANY[backend]
  const broker = await pillarbox.connect(url)
  const one = fresh('one')
  const batched = fresh('many')
  for (const topic of [one, batched]) await broker.ensureGroup(topic, 'g')
  record(backend, 'publish one: Rust core', ONE, await native._benchPublish(url, one, ONE, 1, PAYLOAD.length))
  record(backend, 'publish one: pillarbox', ONE, await timed(async () => {
    for (let i = 0; i < ONE; i++) await broker.publish(one, PAYLOAD)
  }))
  record(backend, 'publish 100s: Rust core', many, await native._benchPublish(url, batched, many, BATCH, PAYLOAD.length))
  const batch = new Array(BATCH).fill(PAYLOAD)
  record(backend, 'publish 100s: pillarbox', many, await timed(async () => {
    for (let i = 0; i < many / BATCH; i++) await broker.publish(batched, batch)
  }))
  await broker.close()
}

async function backlog(backend) {
  const broker = await pillarbox.connect(URLS[backend])
  const topic = fresh('consume')
  await broker.ensureGroup(topic, 'g')
  const batch = new Array(BATCH).fill(PAYLOAD)
  for (let i = 0; i < MANY[backend] / BATCH; i++) await broker.publish(topic, batch)
  await broker.close()
  return topic
}

async function pillarboxConsume(backend) {
  const url = URLS[backend]
  const many = MANY[backend]
  let topic = await backlog(backend)
  record(backend, 'consume: Rust core', many, await native._benchConsume(url, topic, 'g', many, CONCURRENCY, PREFETCH))
  const concurrencies = backend === 'redis' ? REDIS_CONCURRENCIES : [CONCURRENCY]
  for (const concurrency of concurrencies) {
    topic = await backlog(backend)
    const broker = await pillarbox.connect(url)
    const worker = new pillarbox.Worker(broker, topic, 'g', async () => {}, {
      concurrency,
      prefetch: 200 - concurrency,
      pollWaitMs: 200,
    })
    // Timed until every message is handled, as for the Rust core and the
    // peers: stopping (a Kafka consumer leaving its group) is not consuming.
    let running
    const seconds = await timed(async () => {
      running = worker.run()
      await until(() => worker.stats().succeeded >= many, 'the Pillarbox worker')
    })
    worker.shutdown()
    await running
    // The best of the set, as the peer's.
    record(backend, 'consume: pillarbox async', many, seconds)
    await broker.close()
  }
}

// ---------------------------------------------------------------- BullMQ

async function bullmq() {
  const { Queue, Worker } = require('bullmq')
  const { hostname, port } = new URL(URLS.redis)
  const connection = { host: hostname, port: Number(port || 6379) }
  const many = MANY.redis
  const name = fresh('bullmq').replace(/\./g, '-')
  const queue = new Queue(name, { connection })
  // Connected before the clock starts, as Pillarbox's broker is.
  await queue.waitUntilReady()
  const data = { payload: PAYLOAD.toString() }
  record('redis', 'publish one: BullMQ add', ONE, await timed(async () => {
    for (let i = 0; i < ONE; i++) await queue.add('no-op', data)
  }))
  await queue.obliterate({ force: true })
  const bulk = new Array(BATCH).fill({ name: 'no-op', data })
  for (const concurrency of REDIS_CONCURRENCIES) {
    record('redis', 'publish 100s: BullMQ addBulk', many, await timed(async () => {
      for (let i = 0; i < many / BATCH; i++) await queue.addBulk(bulk)
    }))
    let done = 0
    // Connected before the clock starts; timed from run() on, as Pillarbox's worker is.
    const worker = new Worker(name, async () => {}, { connection, concurrency, autorun: false })
    worker.on('completed', () => done++)
    await worker.waitUntilReady()
    let running
    const seconds = await timed(async () => {
      running = worker.run()
      await until(() => done >= many, 'the BullMQ worker')
    })
    await worker.close()
    await running
    record('redis', 'consume: BullMQ worker', many, seconds)
  }
  await queue.obliterate({ force: true })
  await queue.close()
}

// ---------------------------------------------------------------- amqplib

async function amqplib() {
  const amqp = require('amqplib')
  const url = URLS.amqp.split('?')[0]
  const connection = await amqp.connect(url)
  const many = MANY.amqp
  const queue = fresh('amqplib')
  const publisher = await connection.createConfirmChannel()
  // What Pillarbox declares: a durable quorum queue, persistent messages.
  await publisher.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } })
  record('amqp', 'publish one: amqplib, confirm each', ONE, await timed(async () => {
    for (let i = 0; i < ONE; i++) {
      publisher.sendToQueue(queue, PAYLOAD, { persistent: true })
      await publisher.waitForConfirms()
    }
  }))
  record('amqp', 'publish 100s: amqplib, confirms per 100', many, await timed(async () => {
    for (let i = 0; i < many / BATCH; i++) {
      for (let j = 0; j < BATCH; j++) publisher.sendToQueue(queue, PAYLOAD, { persistent: true })
      await publisher.waitForConfirms()
    }
  }))
  const total = ONE + many
  record('amqp', 'consume: amqplib (prefetch 200, ack each)', total, await amqplibConsume(connection, queue, total, 1))
  // What a competent amqplib user writes to go faster: one ack with
  // allUpTo for every 50, the rest on a timer; Pillarbox acks in batches too.
  for (let i = 0; i < many / BATCH; i++) {
    for (let j = 0; j < BATCH; j++) publisher.sendToQueue(queue, PAYLOAD, { persistent: true })
    await publisher.waitForConfirms()
  }
  record('amqp', 'consume: amqplib (prefetch 200, ack per 50)', many, await amqplibConsume(connection, queue, many, 50))
  await publisher.deleteQueue(queue)
  await connection.close()
}

/** Consumes `total` messages of `queue`, acking every `every` (allUpTo) and the rest after 5 ms. */
async function amqplibConsume(connection, queue, total, every) {
  const consumer = await connection.createChannel()
  await consumer.prefetch(200)
  let seen = 0
  let unacked = null
  let timer = null
  const flush = () => {
    if (timer !== null) clearTimeout(timer)
    timer = null
    if (unacked !== null) consumer.ack(unacked, true)
    unacked = null
  }
  const seconds = await timed(async () => {
    let finished
    const all = new Promise((resolve) => (finished = resolve))
    await consumer.consume(queue, (message) => {
      // Anything past what this run waits for goes back when the channel closes.
      if (seen === total) return
      seen++
      unacked = message
      if (seen % every === 0 || seen === total) flush()
      else if (timer === null) timer = setTimeout(flush, 5)
      if (seen === total) finished()
    })
    await all
  })
  await consumer.close()
  return seconds
}

// ---------------------------------------------------------------- kafkajs

async function kafkajs() {
  const { Kafka, logLevel } = require('kafkajs')
  const { host } = new URL(URLS.kafka.replace(/^kafka:/, 'http:'))
  const kafka = new Kafka({ clientId: 'bench', brokers: [host], logLevel: logLevel.NOTHING })
  const many = MANY.kafka
  const admin = kafka.admin()
  await admin.connect()
  const one = fresh('kafkajs-one')
  const batched = fresh('kafkajs-many')
  // Pillarbox's topics have 3 partitions.
  await admin.createTopics({ topics: [one, batched].map((topic) => ({ topic, numPartitions: 3 })), waitForLeaders: true })
  const producer = kafka.producer()
  await producer.connect()
  const value = PAYLOAD
  record('kafka', 'publish one: kafkajs send', ONE, await timed(async () => {
    for (let i = 0; i < ONE; i++) await producer.send({ topic: one, messages: [{ value }] })
  }))
  const messages = new Array(BATCH).fill({ value })
  record('kafka', 'publish 100s: kafkajs send', many, await timed(async () => {
    for (let i = 0; i < many / BATCH; i++) await producer.send({ topic: batched, messages })
  }))
  await producer.disconnect()
  const consumer = kafka.consumer({ groupId: fresh('kafkajs-group') })
  // Connected before the clock starts, as Pillarbox's broker is; joining
  // the group is timed on both sides.
  await consumer.connect()
  let seen = 0
  const seconds = await timed(async () => {
    await consumer.subscribe({ topic: batched, fromBeginning: true })
    await consumer.run({ eachMessage: async () => { seen++ } })
    await until(() => seen >= many, 'the kafkajs consumer')
  })
  record('kafka', 'consume: kafkajs eachMessage', many, seconds)
  await consumer.disconnect()
  await admin.deleteTopics({ topics: [one, batched] })
  await admin.disconnect()
}

// ---------------------------------------------------------------- report

const GOALS = [
  // [backend, what, against, at least]
  ['redis', 'publish 100s: pillarbox', 'publish 100s: Rust core', 0.8],
  ['redis', 'consume: pillarbox async', 'consume: Rust core', 0.5],
  ['redis', 'publish one: pillarbox', 'publish one: BullMQ add', 3],
  ['redis', 'publish 100s: pillarbox', 'publish 100s: BullMQ addBulk', 3],
  ['redis', 'consume: pillarbox async', 'consume: BullMQ worker', 3],
  ['amqp', 'publish 100s: pillarbox', 'publish 100s: Rust core', 0.8],
  ['amqp', 'consume: pillarbox async', 'consume: Rust core', 0.5],
  ['amqp', 'publish one: pillarbox', 'publish one: amqplib, confirm each', 1],
  ['amqp', 'publish 100s: pillarbox', 'publish 100s: amqplib, confirms per 100', 1],
  ['amqp', 'consume: pillarbox async', 'consume: amqplib (prefetch 200, ack each)', 1],
  ['amqp', 'consume: pillarbox async', 'consume: amqplib (prefetch 200, ack per 50)', 1],
  ['kafka', 'publish 100s: pillarbox', 'publish 100s: Rust core', 0.8],
  ['kafka', 'consume: pillarbox async', 'consume: Rust core', 0.5],
  ['kafka', 'publish one: pillarbox', 'publish one: kafkajs send', 2],
  ['kafka', 'publish 100s: pillarbox', 'publish 100s: kafkajs send', 2],
  ['kafka', 'consume: pillarbox async', 'consume: kafkajs eachMessage', 1],
]

function report() {
  console.log(`\nbest of ${ROUNDS} round${ROUNDS === 1 ? '' : 's'}`)
  console.log(`${'backend'.padEnd(8)} ${'what'.padEnd(50)} ${'messages/s'.padStart(12)}`)
  for (const [key, rate] of rates) {
    const [backend, what] = key.split('|')
    console.log(`${backend.padEnd(8)} ${what.padEnd(50)} ${Math.round(rate).toLocaleString('en-US').padStart(12)}`)
  }
  console.log(`\n${'goal'.padEnd(96)} ${'ratio'.padStart(7)}`)
  for (const [backend, what, against, floor] of GOALS) {
    const ours = rates.get(`${backend}|${what}`)
    const theirs = rates.get(`${backend}|${against}`)
    if (ours === undefined || theirs === undefined) continue
    const ratio = ours / theirs
    const goal = `${backend}: ${what} / ${against} >= ${floor.toFixed(2)}`
    console.log(`${goal.padEnd(96)} ${ratio.toFixed(2).padStart(7)} ${ratio >= floor ? 'met' : 'NOT MET'}`)
  }
}

async function main() {
  const only = new Set((process.env.PB_BENCH_ONLY || 'redis,amqp,kafka').split(','))
  const peers = { redis: bullmq, amqp: amqplib, kafka: kafkajs }
  // Rounds go through every backend in turn, so a slow moment of the
  // machine does not fall on one backend's every try.
  for (let round = 1; round <= ROUNDS; round++) {
    for (const backend of ['redis', 'amqp', 'kafka']) {
      if (!only.has(backend)) continue
      console.error(`${backend} (round ${round} of ${ROUNDS}):`)
      // Who goes first alternates between rounds: a broker warms up (and
      // fills up) as a run goes on.
      if (round % 2 === 1) {
        await pillarboxPublish(backend)
        await pillarboxConsume(backend)
        await peers[backend]()
      } else {
        await peers[backend]()
        await pillarboxPublish(backend)
        await pillarboxConsume(backend)
      }
    }
  }
  report()
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e)
    process.exit(1)
  },
)
