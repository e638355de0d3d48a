#!/usr/bin/env node
// `npx pillarbox ...`: the Rust command's own code, from the package's addon.
'use strict'
const path = require('node:path')
const native = require(path.join(__dirname, '..', 'native', 'pillarbox.node'))

process.exitCode = native.cli(['pillarbox', ...process.argv.slice(2)])
