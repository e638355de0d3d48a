// Builds the native addon with cargo and copies it to native/pillarbox.node.
//
// cargo directly rather than the napi CLI: the CLI always passes --target,
// which builds every dependency again in a target tree of its own; cargo
// alone shares the workspace's target/ with the Rust tests and the Python
// package. Release profile, unless PILLARBOX_NODE_PROFILE=dev (the test
// command, which reuses the tests' build).
'use strict'
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const profile = process.env.PILLARBOX_NODE_PROFILE === 'dev' ? 'dev' : 'release'
const cargo = process.env.CARGO || 'cargo'
const args = ['build', '-p', 'pillarbox-node', '--profile', profile, '--message-format=json-render-diagnostics']
let output
try {
  output = execFileSync(cargo, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 })
} catch (e) {
  if (e.code === 'ENOENT') {
    console.error('pillarbox: cargo not found. Install Rust (https://rustup.rs), then npm install again.')
  }
  process.exit(1)
}
let built
for (const line of output.split('\n')) {
  if (!line.startsWith('{')) continue
  const m = JSON.parse(line)
  if (m.reason === 'compiler-artifact' && m.target && m.target.name === 'pillarbox_node') {
    built = m.filenames.find((f) => /\.(so|dylib|dll)$/.test(f))
  }
}
if (!built) {
  console.error('pillarbox: cargo built no addon')
  process.exit(1)
}
fs.mkdirSync(path.join(root, 'native'), { recursive: true })
const target = path.join(root, 'native', 'pillarbox.node')
// A new file, not an overwrite: a running process may have the old one mapped.
fs.rmSync(target, { force: true })
fs.copyFileSync(built, target)
console.error(`pillarbox: built ${path.relative(root, target)} (${profile})`)
