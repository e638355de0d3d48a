'use strict'

const native = require('./native.js')
const { sync } = require('./errors.js')
const { checkOptions } = require('./options.js')

const LEVELS = ['error', 'warn', 'info', 'debug', 'trace']

/**
 * Where the core's log events go: a function `(level, message)` or an
 * object with `error`/`warn`/`info`/`debug` methods (console, pino,
 * winston...), at `level` and above; `null` for nowhere. By default,
 * warnings and errors go to the console.
 */
function setLogger(logger, options) {
  const { level = 'info' } = checkOptions('setLogger', options)
  if (logger == null) return sync(() => native.setLogger(null, level))
  const log =
    typeof logger === 'function'
      ? (r) => logger(r.level, r.message)
      : (r) => {
          const method = logger[r.level] || logger.log
          if (typeof method === 'function') method.call(logger, `pillarbox: ${r.message}`)
        }
  if (!LEVELS.includes(level)) throw new TypeError(`level must be one of ${LEVELS.join(', ')}`)
  return sync(() => native.setLogger(log, level))
}

setLogger(console, { level: 'warn' })

module.exports = { setLogger }
