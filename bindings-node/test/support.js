'use strict'
// The brokers the tests run against: those tests/run.sh starts on 127.0.0.1
// (the same as the Rust and Python tests), and the embedded backends.
// PILLARBOX_TEST_BACKENDS=memory,sqlite limits the run to some of them.
const os = require('node:os')
const path = require('node:path')
const fs = require('node:fs')
const crypto = require('node:crypto')

const URLS = {
  memory: () => `memory://node-${crypto.randomUUID()}`,
  sqlite: () => `sqlite://${path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pb-node-')), 'queue.db')}?synchronous=normal`,
  redis: () => process.env.PILLARBOX_REDIS_URL || 'redis://127.0.0.1:6390',
  // tests/brokers/start-redis-cluster.sh: three primaries, three replicas.
  redisCluster: () =>
    process.env.PILLARBOX_REDIS_CLUSTER_URL || 'redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103',
  // tests/brokers/start-redis-sentinel.sh: a primary, a replica, three sentinels.
  redisSentinel: () =>
    process.env.PILLARBOX_REDIS_SENTINEL_URL ||
    'redis+sentinel://127.0.0.1:27201,127.0.0.1:27202,127.0.0.1:27203/pillarbox',
  amqp: () =>
    process.env.PILLARBOX_AMQP_URL ||
    'amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000',
  kafka: () => process.env.PILLARBOX_KAFKA_URL || 'kafka://127.0.0.1:19092',
}

const BACKENDS = (process.env.PILLARBOX_TEST_BACKENDS || Object.keys(URLS).join(',')).split(',').filter(Boolean)

function topic() {
  return `node.${crypto.randomUUID().slice(0, 12)}`
}

/** Resolves once `done()` holds, or rejects after `limitMs`. */
async function until(done, limitMs = 30000) {
  const deadline = Date.now() + limitMs
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`not done after ${limitMs} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Runs `worker` until `done()`, then shuts it down and waits for it. */
async function runUntil(worker, done, limitMs = 30000) {
  const running = worker.run()
  try {
    await until(done, limitMs)
  } finally {
    worker.shutdown()
    await running
  }
}

module.exports = { URLS, BACKENDS, topic, until, runUntil }
