'use strict'
/** What a handler's throw means to the core: `Retry`, `Fatal`, or any other error. */

/** Throw in a handler to retry the job (within the budget), after `afterMs` if given. */
class Retry extends Error {
  constructor(reason = '', { afterMs, cause } = {}) {
    super(reason, cause === undefined ? undefined : { cause })
    this.name = 'Retry'
    this.afterMs = afterMs
  }
}

/** Throw in a handler to dead-letter the job at once: no retry can fix it. */
class Fatal extends Error {
  constructor(reason = '', { kind, cause } = {}) {
    super(reason, cause === undefined ? undefined : { cause })
    this.name = 'Fatal'
    this.kind = kind
  }
}

function errorName(e) {
  if (e && typeof e.name === 'string' && e.name) return e.name
  return 'Error'
}

/** What a thrown value means to the core: kind, message, retryable, and when. */
function outcome(e, { retryFor, fatalFor = [] }) {
  const cause = e instanceof Error && e.cause !== undefined ? e.cause : undefined
  if (e instanceof Retry) {
    return { kind: cause ? errorName(cause) : 'Retry', message: e.message, retryable: true, retryAfterMs: e.afterMs }
  }
  if (e instanceof Fatal) {
    return { kind: e.kind || (cause ? errorName(cause) : 'Fatal'), message: e.message, retryable: false }
  }
  const is = (classes) => classes.some((c) => e instanceof c)
  return {
    kind: errorName(e),
    message: e instanceof Error ? e.message : String(e),
    retryable: !is(fatalFor) && (retryFor === undefined || is(retryFor)),
  }
}

module.exports = { Retry, Fatal, outcome }
