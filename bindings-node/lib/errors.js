'use strict'
/** The package's errors: one class, `code` the core's stable code, and the addon's errors made into it. */

/** Codes whose errors may go away if the same call is made again later. */
const TRANSIENT = new Set(['CONNECT', 'BACKEND', 'TIMEOUT', 'QUEUE_FULL'])

/** Every error the package throws: `code` is the core's stable code. */
class PillarboxError extends Error {
  constructor(code, message) {
    super(message)
    this.name = 'PillarboxError'
    this.code = code
  }

  /** Whether the same call may succeed later (a lost connection, a timeout). */
  get transient() {
    return TRANSIENT.has(this.code)
  }
}

/** An `INVALID_OPTION` error worded as the core words it. */
function invalidOption(name, reason) {
  return new PillarboxError('INVALID_OPTION', `invalid option \`${name}\`: ${reason}`)
}

/** An `INVALID_MESSAGE` error worded as the core words it. */
function invalidMessage(why) {
  return new PillarboxError('INVALID_MESSAGE', `invalid message: ${why}`)
}

/** The native layer rejects with `[CODE] message`: make that a PillarboxError. */
function fromNative(e) {
  const m = e && typeof e.message === 'string' && /^\[([A-Z_]+)\] ([\s\S]*)$/.exec(e.message)
  return m ? new PillarboxError(m[1], m[2]) : e
}

/** Awaits a call of the addon, its rejection made a PillarboxError. */
async function call(promise) {
  try {
    return await promise
  } catch (e) {
    throw fromNative(e)
  }
}

/** Runs a synchronous call of the addon, its throw made a PillarboxError. */
function sync(fn) {
  try {
    return fn()
  } catch (e) {
    throw fromNative(e)
  }
}

module.exports = { PillarboxError, invalidOption, invalidMessage, fromNative, call, sync }
