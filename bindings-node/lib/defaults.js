'use strict'
/**
 * The core's defaults by call and option (`pillarbox::surface`), as
 * JavaScript names them: `worker.leaseMs`, `retry.maxRetries`,
 * `deadLetters.limit`, `app.defaultTopic`... `null`: unset unless given.
 * The facade writes no default of its own; an option left out crosses
 * unset and the core applies these.
 */
const native = require('./native.js')

module.exports = Object.freeze(JSON.parse(native.defaults()))
