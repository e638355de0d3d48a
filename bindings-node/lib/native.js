'use strict'
/** The addon, built from src/ by scripts/build.js when the package is installed. */
module.exports = require('../native/pillarbox.node')
