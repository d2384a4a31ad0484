'use strict';
// The native addon (built by `napi build` into ../binding.js's loader).
module.exports = require('../binding.js');
