'use strict';
// Errors with Node's classes, codes and message shapes, for the checks the
// facade makes itself (Node does not export its internal error classes).

const { inspect } = require('node:util');

function nodeError(Base, code, message) {
  const err = new Base(message);
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: true, configurable: true });
  // Node's errors print as `TypeError [ERR_X]: message`.
  const stack = err.stack;
  if (typeof stack === 'string') {
    err.stack = stack.replace(`${err.name}:`, `${err.name} [${code}]:`);
  }
  return err;
}

function describeReceived(value) {
  if (value == null) return ` Received ${value}`;
  if (typeof value === 'function') return ` Received function ${value.name}`;
  if (typeof value === 'object') {
    if (value.constructor && value.constructor.name) {
      return ` Received an instance of ${value.constructor.name}`;
    }
    return ` Received ${inspect(value, { depth: -1 })}`;
  }
  let shown = inspect(value, { colors: false });
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`;
  return ` Received type ${typeof value} (${shown})`;
}

function listOf(items, word = 'or') {
  if (items.length <= 1) return items.join('');
  if (items.length === 2) return `${items[0]} ${word} ${items[1]}`;
  return `${items.slice(0, -1).join(', ')}, ${word} ${items[items.length - 1]}`;
}

const TYPES = new Set(['string', 'function', 'number', 'object', 'boolean', 'bigint', 'symbol']);

function invalidArgType(name, expected, actual) {
  expected = Array.isArray(expected) ? expected : [expected];
  const types = expected.filter((t) => TYPES.has(t));
  const instances = expected.filter((t) => !TYPES.has(t));
  const kind = name.includes('.') ? 'property' : 'argument';
  let msg = `The "${name}" ${kind} must be `;
  const parts = [];
  if (types.length) parts.push(`${types.length > 1 ? 'one of type' : 'of type'} ${listOf(types)}`);
  if (instances.length) parts.push(`an instance of ${listOf(instances)}`);
  msg += listOf(parts) + '.' + describeReceived(actual);
  return nodeError(TypeError, 'ERR_INVALID_ARG_TYPE', msg);
}

function invalidArgValue(name, value, reason = 'is invalid') {
  const kind = name.includes('.') ? 'property' : 'argument';
  let shown = inspect(value);
  if (shown.length > 128) shown = `${shown.slice(0, 128)}...`;
  return nodeError(TypeError, 'ERR_INVALID_ARG_VALUE', `The ${kind} '${name}' ${reason}. Received ${shown}`);
}

function outOfRange(name, range, value) {
  return nodeError(RangeError, 'ERR_OUT_OF_RANGE',
    `The value of "${name}" is out of range. It must be ${range}. Received ${inspect(value)}`);
}

const codes = {
  ERR_INVALID_ARG_TYPE: invalidArgType,
  ERR_INVALID_ARG_VALUE: invalidArgValue,
  ERR_OUT_OF_RANGE: outOfRange,
  ERR_MISSING_ARGS: (...names) => nodeError(TypeError, 'ERR_MISSING_ARGS',
    `The ${listOf(names.map((n) => `"${n}"`), 'and')} argument${names.length > 1 ? 's' : ''} must be specified`),
  ERR_IPC_CHANNEL_CLOSED: () => nodeError(Error, 'ERR_IPC_CHANNEL_CLOSED', 'Channel closed'),
  ERR_IPC_DISCONNECTED: () => nodeError(Error, 'ERR_IPC_DISCONNECTED', 'IPC channel is already disconnected'),
  ERR_INVALID_HANDLE_TYPE: () => nodeError(TypeError, 'ERR_INVALID_HANDLE_TYPE', 'This handle type cannot be sent'),
  ERR_CHILD_PROCESS_IPC_REQUIRED: (name) => nodeError(Error, 'ERR_CHILD_PROCESS_IPC_REQUIRED',
    `Forked processes must have an IPC channel, missing value 'ipc' in ${name}`),
  ERR_UNKNOWN_SIGNAL: (sig) => nodeError(TypeError, 'ERR_UNKNOWN_SIGNAL', `Unknown signal: ${sig}`),
  ERR_SOCKET_BAD_PORT: (name, port) => nodeError(RangeError, 'ERR_SOCKET_BAD_PORT',
    `${name} should be >= 0 and < 65536. Received ${inspect(port)}.`),
  ERR_RCLUSTER_BAD_MESSAGE: (detail) => nodeError(Error, 'ERR_RCLUSTER_BAD_MESSAGE',
    `Worker sent a malformed IPC message and was disconnected: ${detail}`),
  ERR_RCLUSTER_NOT_READY: (message) => nodeError(Error, 'ERR_RCLUSTER_NOT_READY', message),
  // The CLI's control socket (lib/cli/).
  ERR_RCLUSTER_PROTOCOL: (message) => nodeError(Error, 'ERR_RCLUSTER_PROTOCOL', message),
  ERR_RCLUSTER_UNKNOWN_COMMAND: (cmd) => nodeError(Error, 'ERR_RCLUSTER_UNKNOWN_COMMAND',
    `no such command ${JSON.stringify(cmd)}`),
  ERR_RCLUSTER_STOPPING: () => nodeError(Error, 'ERR_RCLUSTER_STOPPING', 'the app is stopping'),
  ERR_RCLUSTER_RESTART: (slot, cause) => Object.assign(
    nodeError(Error, 'ERR_RCLUSTER_RESTART', `cannot restart slot ${slot}: ${cause.message}`), { slot, cause }),
};

function errnoException(errno, syscall, extra) {
  const { getSystemErrorName } = require('node:util');
  const code = getSystemErrorName(errno);
  const err = new Error(`${syscall} ${code}${extra ? ` ${extra}` : ''}`);
  err.errno = errno;
  err.code = code;
  err.syscall = syscall;
  return err;
}

// A process that could not be spawned, as child_process reports it.
function spawnError(errno, file, args) {
  const err = errnoException(errno, `spawn ${file}`);
  err.path = file;
  err.spawnargs = args;
  return err;
}

module.exports = { codes, errnoException, spawnError };
