'use strict'
/** The package's errors: one class, `code` the core's stable code. */

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

module.exports = { PillarboxError, invalidOption }
