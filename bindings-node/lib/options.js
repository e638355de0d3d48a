'use strict'
/**
 * The option names each public call takes. A name a call does not know is
 * refused with `INVALID_OPTION` naming it (and the closest known name),
 * never ignored: `{ concurency: 4 }` silently running at concurrency 1 is
 * the bug this prevents.
 */

const { invalidOption } = require('./errors.js')

const RETRY = ['maxRetries', 'initialDelayMs', 'multiplier', 'maxDelayMs', 'jitter']
const WORKER = [
  'concurrency',
  'prefetch',
  'retry',
  'handlerTimeoutMs',
  'leaseMs',
  'pollWaitMs',
  'shutdownGraceMs',
  'idempotencyStore',
  'idempotencyRetentionMs',
  'busyKeyDelayMs',
  'consumerName',
  'retryFor',
  'fatalFor',
]
const PUBLISH = ['key', 'idempotencyKey', 'headers', 'contentType', 'delayMs', 'deliverAt', 'traceparent', 'tracestate']
const FILTER = ['errorKind', 'cause', 'errorContains', 'failedBefore', 'messageIds']

/** Every call's options, by the name the errors use for the call. */
const KNOWN = {
  publish: PUBLISH,
  message: ['payload', ...PUBLISH],
  worker: WORKER,
  retry: RETRY,
  deadLetters: ['limit', 'after'],
  redrive: [...FILTER, 'perSecond', 'limit'],
  purge: FILTER,
  app: ['group', 'defaultTopic'],
  task: ['topic', 'retry', 'idempotencyKey'],
  signature: ['topic'],
  applyAsync: ['kwargs', 'countdownMs', 'eta', 'key', 'idempotencyKey', 'headers'],
  appWorkers: [...WORKER, 'topics'],
  setLogger: ['level'],
}

/**
 * `options` checked against the names `call` takes (see KNOWN); `undefined`
 * is no options. `prefix` names where the options sit (`retry.`), for the
 * error. Returns the options, or `{}`.
 */
function checkOptions(call, options, prefix = '') {
  if (options === undefined) return {}
  const known = KNOWN[call]
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    const what = options === null ? 'null' : Array.isArray(options) ? 'an array' : typeof options
    throw invalidOption(prefix.replace(/\.$/, '') || `${call} options`, `must be an object of options, not ${what}`)
  }
  for (const name of Object.keys(options)) {
    if (known.includes(name)) continue
    const near = closest(name, known)
    const hint = near ? ` (did you mean \`${prefix}${near}\`?)` : ''
    throw invalidOption(`${prefix}${name}`, `not an option of ${call}${hint}; its options are ${known.join(', ')}`)
  }
  return options
}

/** The known name nearest to `name`, if a typo away (an edit distance of at most 2). */
function closest(name, known) {
  let best = null
  let bestDistance = 3
  for (const candidate of known) {
    const d = distance(name.toLowerCase(), candidate.toLowerCase())
    if (d < bestDistance) [best, bestDistance] = [candidate, d]
  }
  return best
}

function distance(a, b) {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = row
  }
  return previous[b.length]
}

module.exports = { checkOptions, KNOWN }
