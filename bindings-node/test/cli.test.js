// `npx pillarbox`: the Rust command's own code, through the package's addon.
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const os = require('node:os')
const fs = require('node:fs')
const { spawnSync } = require('node:child_process')
const { connect } = require('..')

const bin = path.join(__dirname, '..', 'bin', 'pillarbox.js')

function pillarbox(args, input = '') {
  const env = { ...process.env }
  delete env.PILLARBOX_URL
  return spawnSync(process.execPath, [bin, ...args], { input, encoding: 'utf8', env, timeout: 120_000 })
}

test('the command publishes and inspects through the package', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pillarbox-cli-'))
  const url = `sqlite://${path.join(dir, 'queue.db')}`
  const broker = await connect(url)
  await broker.ensureGroup('orders', 'g')
  const published = pillarbox(['--url', url, '--json', 'publish', 'orders', '--lines'], 'one\ntwo\n')
  assert.equal(published.status, 0, published.stderr)
  assert.equal(JSON.parse(published.stdout).length, 2)
  const figures = JSON.parse(pillarbox(['--url', url, '--json', 'inspect', 'orders', 'g']).stdout)
  assert.equal(figures[0].ready, 2)
  assert.equal((await broker.inspect('orders', 'g')).ready, 2)
  await broker.close()
})

test('errors keep their exit status', () => {
  const bad = pillarbox(['--url', 'nosuch://x', 'groups', 't'])
  assert.equal(bad.status, 2)
  assert.match(bad.stderr, /unknown URL scheme/)
})
