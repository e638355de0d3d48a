'use strict'

const native = require('./native.js')
const { fromNative, sync } = require('./errors.js')

/**
 * Calls settled through one shared channel rather than a native Promise
 * each (see src/completions.rs): `submit(start)` calls `start(completions,
 * ticket)` and resolves with what the ticket settles with.
 */
const pending = new Map()
let nextTicket = 1
const completions = new native.Completions(() => {
  const rows = completions.take()
  for (let at = 0; at < rows.length; at += 3) {
    const ticket = rows[at]
    const { resolve, reject } = pending.get(ticket)
    pending.delete(ticket)
    if (rows[at + 2] === null) resolve(rows[at + 1])
    else reject(fromNative(new Error(rows[at + 2])))
  }
})

function submit(start) {
  const ticket = nextTicket
  nextTicket = nextTicket === 0xffffffff ? 1 : nextTicket + 1
  return new Promise((resolve, reject) => {
    sync(() => start(completions, ticket))
    pending.set(ticket, { resolve, reject })
  })
}

module.exports = { submit }
