'use strict';
// The metrics and health endpoint (`setupPrimary({ metrics: { host, port } })`).
// The core serves it; JS only validates the option and starts, moves or stops
// it, and reports a bind failure the way net.Server#listen would.

const { getSystemErrorMap, getSystemErrorName } = require('node:util');

const binding = require('./binding');
const { validateObject, validateString, validatePort, validateNoNullBytes } = require('./validate');

const DEFAULT_HOST = '127.0.0.1';
const NOT_FOUND = ['EAI_NODATA', 'EAI_NONAME']; // libuv's names of what dns.lookup calls ENOTFOUND

let current = null; // { host, port, address: { address, family, port } | null while a name resolves }

// `undefined`, `null` or `false`: no endpoint.
function parse(value, name = 'options.metrics') {
  if (value === undefined || value === null || value === false) return null;
  validateObject(value, name);
  const host = value.host === undefined ? DEFAULT_HOST : value.host;
  validateString(host, `${name}.host`);
  validateNoNullBytes(host, `${name}.host`);
  const port = validatePort(value.port, `${name}.port`);
  return { host, port };
}

// What net.Server#listen reports for `r` (errno, syscall). A failed bind names
// `address`: a numeric host as given, a host name as the address it resolved to.
function listenError({ errno, syscall }, host, port, address) {
  if (syscall === 'getaddrinfo') {
    const code = NOT_FOUND.includes(getSystemErrorName(errno)) ? 'ENOTFOUND' : getSystemErrorName(errno);
    const err = new Error(`getaddrinfo ${code} ${host}`);
    return Object.assign(err, { errno, code, syscall: 'getaddrinfo', hostname: host });
  }
  const [code, description] = getSystemErrorMap().get(errno) || [`Unknown system error ${errno}`, 'unknown error'];
  const err = new Error(`listen ${code}: ${description} ${address}:${port}`);
  return Object.assign(err, { errno, code, syscall: 'listen', address, port });
}

const boundAddress = (r) => ({ address: r.address, family: r.family, port: r.port });

// Starts, moves or stops the endpoint for `want` (from parse); the old
// endpoint is closed first. A numeric host is bound now: this throws what
// listen() would (EADDRINUSE, EACCES, EADDRNOTAVAIL). A host name resolves on
// the core, so the JS thread never waits for DNS: this returns at once, and
// what fails later (the lookup, e.g. ENOTFOUND, or the bind) goes to `report`.
function apply(want, report) {
  if (want && current && want.host === current.host && want.port === current.port) return;
  if (!want) {
    if (current) binding.stopMetrics();
    current = null;
    return;
  }
  const started = { ...want, address: null };
  const r = binding.startMetrics(want.host, want.port, (late) => {
    if (current !== started) return; // moved or stopped meanwhile
    if (late.errno) {
      current = null;
      report(listenError(late, want.host, want.port, late.address));
    } else {
      started.address = boundAddress(late);
    }
  });
  if (r.errno) {
    current = null;
    throw listenError(r, want.host, want.port, want.host);
  }
  if (!r.pending) started.address = boundAddress(r);
  current = started;
}

// The CLI's `[host:]port` (`[::]:9100` for IPv6); null when it is not one.
function parseHostPort(text) {
  const m = /^(?:(?:\[([^\]]+)\]|([^:\[\]]+)):)?([0-9]{1,5})$/.exec(text);
  if (!m || Number(m[3]) > 65535) return null;
  return { host: m[1] || m[2] || DEFAULT_HOST, port: Number(m[3]) };
}

// What `server.address()` would say, or null without an endpoint (and while
// its host name resolves).
function address() {
  return current && current.address ? { ...current.address } : null;
}

module.exports = { parse, apply, address, parseHostPort, DEFAULT_HOST };
