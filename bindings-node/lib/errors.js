'use strict'
/** The package's errors: one class, `code` the core's stable code, and the addon's errors made into it. */

/**
 * Every error the package throws: `code` is the core's stable code,
 * `transient` the core's word on whether trying again may succeed, and the
 * core's fields of the error (`option`, `size`, `limit`...) are properties.
 */
class PillarboxError extends Error {
  constructor(code, message, { transient = false, ...fields } = {}) {
    super(message)
    this.name = 'PillarboxError'
    this.code = code
    this.transient = transient
    Object.assign(this, fields)
  }
}

/** An `INVALID_OPTION` error worded as the core words it. */
function invalidOption(option, reason) {
  return new PillarboxError('INVALID_OPTION', `invalid option \`${option}\`: ${reason}`, { option, reason })
}

/** An `INVALID_MESSAGE` error worded as the core words it. */
function invalidMessage(reason) {
  return new PillarboxError('INVALID_MESSAGE', `invalid message: ${reason}`, { reason })
}

/**
 * The addon rejects with the core's error as JSON (src/errors.rs): its
 * code, message, transient flag and fields, each a value of its own.
 * Anything else (a JavaScript error passed through) is returned as it is.
 */
function fromNative(e) {
  if (!(e instanceof Error) || !e.message.startsWith('{"code":')) return e
  const { code, message, transient, fields } = JSON.parse(e.message)
  return new PillarboxError(code, message, { transient, ...fields })
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
