'use strict';
const { codes } = require('./errors');

function validateString(value, name) {
  if (typeof value !== 'string') throw codes.ERR_INVALID_ARG_TYPE(name, 'string', value);
}

function validateArray(value, name) {
  if (!Array.isArray(value)) throw codes.ERR_INVALID_ARG_TYPE(name, 'Array', value);
}

function validateStringArray(value, name) {
  validateArray(value, name);
  for (let i = 0; i < value.length; i++) validateString(value[i], `${name}[${i}]`);
}

function validateObject(value, name) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw codes.ERR_INVALID_ARG_TYPE(name, 'Object', value);
  }
}

function validateBoolean(value, name) {
  if (typeof value !== 'boolean') throw codes.ERR_INVALID_ARG_TYPE(name, 'boolean', value);
}

function validateInteger(value, name, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER) {
  if (typeof value !== 'number') throw codes.ERR_INVALID_ARG_TYPE(name, 'number', value);
  if (!Number.isInteger(value)) throw codes.ERR_OUT_OF_RANGE(name, 'an integer', value);
  if (value < min || value > max) throw codes.ERR_OUT_OF_RANGE(name, `>= ${min} && <= ${max}`, value);
}

// A number of things (workers, restarts): an integer from min to max. One check for the library's counts and the
// CLI's control socket, so both refuse the same value with the same error.
function validateCount(value, name, min = 0, max = Infinity) {
  if (typeof value !== 'number') throw codes.ERR_INVALID_ARG_TYPE(name, 'number', value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw codes.ERR_OUT_OF_RANGE(name, `an integer >= ${min}${max === Infinity ? '' : ` && <= ${max}`}`, value);
  }
}

function validateInt32(value, name, min = -2147483648, max = 2147483647) {
  validateInteger(value, name, min, max);
}

function validatePort(port, name = 'Port') {
  if ((typeof port !== 'number' && typeof port !== 'string') ||
      (typeof port === 'string' && port.trim().length === 0) ||
      +port !== (+port >>> 0) || port > 0xFFFF) {
    throw codes.ERR_SOCKET_BAD_PORT(name, port);
  }
  return port | 0;
}

function validateOneOf(value, name, oneOf) {
  if (!oneOf.includes(value)) {
    const allowed = oneOf.map((v) => (typeof v === 'string' ? `'${v}'` : String(v))).join(', ');
    throw codes.ERR_INVALID_ARG_VALUE(name, value, `must be one of: ${allowed}`);
  }
}

function validateNoNullBytes(value, name) {
  if (typeof value === 'string' && value.includes('\u0000')) {
    throw codes.ERR_INVALID_ARG_VALUE(name, value, 'must be a string without null bytes');
  }
}

// `sticky`: 'ip' (by client address) or off (undefined, null, false), as
// `metrics` is.
function validateSticky(value, name) {
  if (value === undefined || value === null || value === false) return false;
  if (typeof value !== 'string' && typeof value !== 'boolean') {
    throw codes.ERR_INVALID_ARG_TYPE(name, ['string', 'boolean'], value);
  }
  if (value !== 'ip') throw codes.ERR_INVALID_ARG_VALUE(name, value, "must be 'ip' or false");
  return true;
}

module.exports = {
  validateSticky,
  validateString,
  validateArray,
  validateStringArray,
  validateObject,
  validateBoolean,
  validateInteger,
  validateInt32,
  validateCount,
  validatePort,
  validateOneOf,
  validateNoNullBytes,
};
