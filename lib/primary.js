'use strict';
// The `cluster` object in the primary: Node's API and events, backed by the
// Rust core (spawning, channels, sockets and hand-off all happen there).

const EventEmitter = require('node:events');
const path = require('node:path');
const { fileURLToPath } = require('node:url');
const { getSystemErrorName, types: { isUint8Array } } = require('node:util');

const binding = require('./binding');
const metrics = require('./metrics');
const nodeMirror = require('./node-mirror');
const { Worker, WorkerProcess, cork, uncorkAll } = require('./worker');
const { codes, errnoException, spawnError } = require('./errors');
const {
  validateString, validateStringArray, validateObject, validatePort, validateOneOf,
  validateNoNullBytes, validateSticky,
} = require('./validate');

const SCHED_NONE = 1;
const SCHED_RR = 2;
const SCHED_REUSEPORT = 3;

const cluster = new EventEmitter();
// Signals "every worker is gone" to cluster.disconnect() callbacks.
const intercom = new EventEmitter();

cluster.isWorker = false;
cluster.isMaster = true; // deprecated alias
cluster.isPrimary = true;
cluster.Worker = Worker;
cluster.worker = undefined;
cluster.workers = {};
cluster.settings = {};
cluster.SCHED_NONE = SCHED_NONE;
cluster.SCHED_RR = SCHED_RR;
cluster.SCHED_REUSEPORT = SCHED_REUSEPORT;

function defaultPolicy(env = process.env, platform = process.platform) {
  switch (env.NODE_CLUSTER_SCHED_POLICY) {
    case 'rr': return SCHED_RR;
    case 'none': return SCHED_NONE;
    case 'reuseport': return SCHED_REUSEPORT;
    default:
      // Only Linux's SO_REUSEPORT balances connections across sockets.
      return platform === 'linux' ? SCHED_REUSEPORT : SCHED_RR;
  }
}
cluster.schedulingPolicy = defaultPolicy();

let policyInUse; // what the core was told at the first setupPrimary() (undefined before)
let stickyInUse = false;
let debugPortOffset = 1;

cluster.setupPrimary = function setupPrimary(options) {
  if (options !== undefined && options !== null) validateObject(options, 'options');
  const settings = {
    args: process.argv.slice(2),
    exec: process.argv[1],
    execArgv: process.execArgv,
    silent: false,
    ...cluster.settings,
    ...options,
  };
  // V8 profiles of several processes in one file are useless.
  if (Array.isArray(settings.execArgv) &&
      settings.execArgv.some((s) => typeof s === 'string' && s.startsWith('--prof')) &&
      !settings.execArgv.some((s) => typeof s === 'string' && s.startsWith('--logfile='))) {
    settings.execArgv = [...settings.execArgv, '--logfile=v8-%p.log'];
  }
  // The policy is fixed by the first setupPrimary(): a bad one fails it (and
  // every later call) before anything changes.
  const policy = policyInUse === undefined ? cluster.schedulingPolicy : policyInUse;
  if (policy !== SCHED_NONE && policy !== SCHED_RR && policy !== SCHED_REUSEPORT) {
    throw codes.ERR_INVALID_ARG_VALUE('cluster.schedulingPolicy', policy,
      'must be SCHED_NONE, SCHED_RR or SCHED_REUSEPORT');
  }
  // Checked here, where the policy is read, so a bad combination fails
  // before any worker exists.
  const sticky = validateSticky(settings.sticky, 'options.sticky');
  if (sticky && policy === SCHED_NONE) {
    throw codes.ERR_INVALID_ARG_VALUE('options.sticky', settings.sticky,
      'cannot be used with SCHED_NONE (whichever worker accepts first gets the connection); ' +
      'use SCHED_REUSEPORT or SCHED_RR');
  }
  const metricsWanted = metrics.parse(settings.metrics);
  const configure = supervisor.prepare(settings);
  // Throws what listen() would: before anything else changes (for a host
  // name, what fails after the lookup is reported in the background).
  metrics.apply(metricsWanted, reportInBackground);
  configure();
  cluster.settings = settings;
  if (policyInUse === undefined) {
    binding.setSchedulingPolicy(policy);
    policyInUse = policy;
  }
  // Applies to servers workers open from now on.
  if (sticky !== stickyInUse) binding.setSticky(sticky);
  stickyInUse = sticky;
  process.nextTick(() => cluster.emit('setup', settings));
};
cluster.setupMaster = cluster.setupPrimary;

// Where the metrics endpoint listens (`{ address, family, port }`), or null.
cluster.metricsAddress = metrics.address;
// Lets node:cluster users in this primary (prom-client) see rcluster's workers.
cluster.mirrorToNodeCluster = () => nodeMirror.mirror(cluster);

function isUsingInspector(execArgv) {
  const re = /--inspect(?:-brk|-port|-wait)?|--debug-port/;
  return execArgv.some((a) => re.test(a)) || re.test(process.env.NODE_OPTIONS || '');
}

function inspectPortFor(setting) {
  let port = setting;
  if (typeof port === 'function') {
    port = port();
  } else if (port === undefined) {
    port = process.debugPort + debugPortOffset++;
    if (port > 65535) port = port - 65535 + 1024 - 1;
  }
  validatePort(port);
  return port;
}

// Node's `stdio` option as one entry per child fd for the core: 'inherit',
// 'pipe', 'ignore', 'ipc' or an fd number.
function resolveStdio(settings) {
  let stdio = settings.stdio;
  if (stdio === undefined) {
    const mode = settings.silent ? 'pipe' : 'inherit';
    return [mode, mode, mode, 'ipc'];
  }
  if (typeof stdio === 'string') stdio = [stdio, stdio, stdio, 'ipc'];
  if (!Array.isArray(stdio)) throw codes.ERR_INVALID_ARG_VALUE('stdio', stdio);
  if (!stdio.includes('ipc')) throw codes.ERR_CHILD_PROCESS_IPC_REQUIRED('options.stdio');
  const out = [];
  for (let i = 0; i < Math.max(3, stdio.length); i++) {
    const s = stdio[i];
    if (s == null) out.push(i < 3 ? 'pipe' : 'ignore');
    else if (s === 'pipe' || s === 'overlapped') out.push('pipe');
    else if (s === 'inherit') out.push('inherit');
    else if (s === 'ignore') out.push('ignore');
    else if (s === 'ipc') out.push(i < 3 ? 'ignore' : 'ipc');
    else if (typeof s === 'number' && Number.isInteger(s) && s >= 0) out.push(String(s));
    else if (s && typeof s === 'object' && typeof s.fd === 'number') out.push(String(s.fd));
    else if (s && typeof s === 'object' && s._handle && typeof s._handle.fd === 'number') out.push(String(s._handle.fd));
    else throw codes.ERR_INVALID_ARG_VALUE('stdio', s);
  }
  return out;
}

function toPath(value, name) {
  if (value instanceof URL) return fileURLToPath(value);
  if (Buffer.isBuffer(value)) return value.toString();
  validateString(value, name);
  validateNoNullBytes(value, name);
  return value;
}

// `exec` as child_process.fork takes it: a string, a file: URL or a
// Uint8Array (a Buffer). The array becomes an argument by string conversion,
// as in Node: a Buffer's text, a plain Uint8Array's comma-separated bytes.
function modulePathOf(value) {
  const p = value instanceof URL ? fileURLToPath(value) : value;
  if (typeof p !== 'string' && !isUint8Array(p)) {
    throw codes.ERR_INVALID_ARG_TYPE('modulePath', ['string', 'Buffer', 'URL'], p);
  }
  if (typeof p === 'string' ? p.includes('\u0000') : p.includes(0)) {
    throw codes.ERR_INVALID_ARG_VALUE('modulePath', p, 'must be a string, Uint8Array, or URL without null bytes');
  }
  return String(p);
}

// Everything Node's child_process.fork would check, checked before spawning.
// (The core adds NODE_UNIQUE_ID, as it numbers the workers.)
function workerSpec(env) {
  const s = cluster.settings;
  const exec = modulePathOf(s.exec);
  const args = s.args == null ? [] : s.args;
  validateStringArray(args, 'args');
  const execArgv = [...(s.execArgv || process.execArgv)];
  validateStringArray(execArgv, 'options.execArgv');
  if (s.inspectPort === null) throw codes.ERR_SOCKET_BAD_PORT('Port', null);
  if (isUsingInspector(execArgv)) execArgv.push(`--inspect-port=${inspectPortFor(s.inspectPort)}`);
  const cwd = s.cwd == null ? undefined : path.resolve(toPath(s.cwd, 'options.cwd'));
  for (const id of ['uid', 'gid']) {
    // child_process checks these as int32 and reports any miss as a type error.
    if (s[id] != null && (typeof s[id] !== 'number' || (s[id] | 0) !== s[id])) {
      throw codes.ERR_INVALID_ARG_TYPE(`options.${id}`, 'int32', s[id]);
    }
  }
  const serialization = s.serialization === undefined ? 'json' : s.serialization;
  validateOneOf(serialization, 'options.serialization', ['json', 'advanced']);
  const stdio = resolveStdio(s);
  const fullEnv = { ...process.env, ...env, ...supervisor.workerEnv() };
  delete fullEnv.NODE_UNIQUE_ID;
  const envPairs = [];
  for (const key of Object.keys(fullEnv)) {
    const value = fullEnv[key];
    if (value === undefined) continue;
    validateNoNullBytes(key, `options.env['${key}']`);
    validateNoNullBytes(String(value), `options.env['${key}']`);
    envPairs.push(`${key}=${value}`);
  }
  const file = process.execPath;
  return {
    file,
    args: [...execArgv, exec, ...args],
    env: envPairs,
    cwd,
    stdio,
    uid: s.uid == null ? undefined : s.uid,
    gid: s.gid == null ? undefined : s.gid,
    serialization,
  };
}

// The spawn errors Node reports with an 'error' event; it throws the others.
const ASYNC_SPAWN_ERRORS = new Set(['EACCES', 'EAGAIN', 'EMFILE', 'ENFILE', 'ENOENT']);

function removeWorker(worker) {
  delete cluster.workers[worker.id];
  nodeMirror.forget(worker);
  if (Object.keys(cluster.workers).length === 0) intercom.emit('disconnect');
}

// Every live worker's process object, by id: core events are routed here.
// Finished ones stay reachable for a while: the core reports what it does
// about a dead worker (restarting, crash loop) after its exit.
const procs = new Map();
const retired = new Map();
const RETIRED_KEPT = 256;

function retire(id) {
  const proc = procs.get(id);
  procs.delete(id);
  if (!proc) return;
  retired.set(id, proc);
  if (retired.size > RETIRED_KEPT) retired.delete(retired.keys().next().value);
}

// An error of something the primary does in the background (a reload or
// recycle of supervision, the metrics endpoint's start for a host name): to
// 'error' listeners when there are any, else a warning, not an uncaught
// 'error' that would take the primary down.
function reportInBackground(err) {
  if (cluster.listenerCount('error') > 0) cluster.emit('error', err);
  else process.emitWarning(err);
}

// The kernel refused a reuseport group's steering program (a seccomp filter,
// an old kernel): the group runs on the kernel's own hash. Said once per
// server, since whoever asked for sticky: 'ip' relies on it.
function warnSteeringRefused({ errno, sticky, port }) {
  const why = `the kernel refused the steering program of the server on port ${port} (${getSystemErrorName(-errno)})`;
  const [what, code] = sticky
    ? ["sticky: 'ip' is not in effect there: the kernel spreads connections by its own hash, without client " +
      "affinity (SCHED_RR keeps sticky: 'ip' without kernel steering)", 'RCLUSTER_STICKY_UNAVAILABLE']
    : ["load-aware steering is not in effect there: the kernel spreads connections by its own hash, also to " +
      "stalled workers and to a departed worker's socket (whose queue the primary hands on)",
    'RCLUSTER_STEERING_UNAVAILABLE'];
  process.emitWarning(`rcluster: ${why}; ${what}`, { code });
}

// Returns true when the rest of the batch must wait for the next tick.
function onCoreEvent(ev) {
  if (ev.kind === 'steeringRefused') {
    warnSteeringRefused(ev);
    return false;
  }
  if (ev.kind === 'forked') {
    // The new worker's 'fork' (and 'spawn') are emitted on the next tick, as
    // after cluster.fork(); its own later events may be in this batch.
    supervisor.onRespawned(ev);
    return true;
  }
  const proc = procs.get(ev.id) || retired.get(ev.id);
  if (proc) proc._onEvent(ev);
  return false;
}

// Core events arrive in batches (see src/pump.rs): `meta` holds four
// numbers per event (worker id, kind, a, b); user messages' frames are the
// lines of `json` or `data[a..b]`, successful writes carry their token in
// `a`, and everything else is the object `others[a]`.
const KIND_JSON = 0;
const KIND_ADVANCED = 1;
const KIND_SENT = 2;

// Batches not yet fully delivered: a listener that throws must not lose the
// events behind it, which are delivered on the next tick.
const batches = [];
let draining = false;

// With arguments: user messages of worker `id` read on this thread, as a
// string of JSON lines or a Buffer of length-prefixed advanced frames.
function onCoreEvents(id, frames) {
  if (id !== undefined) {
    const lines = typeof frames === 'string' ? frames.split('\n') : null;
    batches.push({ direct: id, frames, lines, next: 0 });
    if (!draining) deliverBatches();
    return;
  }
  const batch = binding.takeEvents();
  batch.lines = batch.json === undefined ? null : batch.json.split('\n');
  batch.line = 0;
  batch.next = 0;
  batches.push(batch);
  if (!draining) deliverBatches();
}

function deliverBatches() {
  draining = true;
  cork();
  try {
    let pause = false;
    while (batches.length > 0 && !pause) {
      const batch = batches[0];
      if (batch.direct !== undefined) {
        deliverDirect(batch);
        batches.shift();
        continue;
      }
      const { meta } = batch;
      while (batch.next < meta.length && !pause) {
        const i = batch.next;
        batch.next += 4;
        const kind = meta[i + 1];
        if (kind === KIND_JSON) {
          const line = batch.lines[batch.line++];
          const proc = procs.get(meta[i]) || retired.get(meta[i]);
          if (proc) proc._onFrame(line);
        } else if (kind === KIND_ADVANCED) {
          const proc = procs.get(meta[i]) || retired.get(meta[i]);
          if (proc) proc._onFrame(batch.data.subarray(meta[i + 2], meta[i + 3]));
        } else if (kind === KIND_SENT) {
          const proc = procs.get(meta[i]) || retired.get(meta[i]);
          if (proc) proc._onSent(meta[i + 2], undefined);
        } else {
          pause = onCoreEvent(batch.others[meta[i + 2]]);
        }
      }
      if (batch.next >= meta.length) batches.shift();
    }
  } finally {
    draining = false;
    uncorkAll();
    if (batches.length > 0) process.nextTick(deliverBatches);
  }
}

// One worker's frames, resumable: `next` moves before each delivery, so a
// throwing listener leaves the rest for the next tick.
function deliverDirect(batch) {
  const proc = procs.get(batch.direct) || retired.get(batch.direct);
  const { lines, frames } = batch;
  if (lines !== null) {
    while (batch.next < lines.length) {
      const line = lines[batch.next++];
      if (proc) proc._onFrame(line);
    }
    return;
  }
  while (batch.next < frames.length) {
    const start = batch.next + 4;
    const end = start + frames.readUInt32BE(batch.next);
    batch.next = end;
    if (proc) proc._onFrame(frames.subarray(start, end));
  }
}

function onInternalEvent(worker, ev) {
  switch (ev.kind) {
    case 'online':
      worker.state = 'online';
      worker.emit('online');
      cluster.emit('online', worker);
      break;
    case 'listening': {
      const m = JSON.parse(ev.json);
      const info = { addressType: m.addressType, address: m.address, port: m.port, fd: m.fd };
      worker.state = 'listening';
      worker.emit('listening', info);
      cluster.emit('listening', worker, info);
      break;
    }
    case 'exitedAfterDisconnect':
      worker.exitedAfterDisconnect = true;
      break;
    default:
      supervisor.onEvent(worker, ev);
  }
}

// Wraps a started process (by fork() or by the core's restart) in a Worker
// wired like Node's: events, bookkeeping, and the 'fork' event.
function attachWorker(id, slot, spec, started) {
  const proc = new WorkerProcess(id, spec.file, [spec.file, ...spec.args], spec.serialization);
  const worker = new Worker({ id, process: proc });
  worker.slot = slot;
  worker.startedAt = Date.now();

  worker.on('message', function onMessage(message, handle) {
    cluster.emit('message', this, message, handle);
  });

  let exited = false;
  let disconnected = false;
  const settle = () => {
    if (exited && disconnected) {
      retire(id);
      binding.releaseWorker(id);
    }
  };

  proc.once('exit', (exitCode, signalCode) => {
    exited = true;
    if (!worker.isConnected()) removeWorker(worker);
    worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
    worker.state = 'dead';
    worker.emit('exit', exitCode, signalCode);
    cluster.emit('exit', worker, exitCode, signalCode);
    // What the core decided for the slot ('restarting', 'crashloop') rides on the exit.
    if (proc._next) supervisor.onEvent(worker, proc._next);
    settle();
  });

  proc.once('disconnect', () => {
    disconnected = true;
    if (worker.isDead()) removeWorker(worker);
    worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
    worker.state = 'disconnected';
    worker.emit('disconnect');
    cluster.emit('disconnect', worker);
    settle();
  });

  proc.on('internalEvent', (ev) => onInternalEvent(worker, ev));
  procs.set(id, proc);

  if (started.pid === undefined || started.pid === null) {
    // A process that never started, reported as Node does (ENOENT, EACCES,
    // EAGAIN…): 'error' on the next tick, then, once the channel reads end of
    // file on a later turn of the loop, 'close' and 'disconnect'. No 'exit'.
    proc.connected = true;
    retire(id);
    process.nextTick(() => {
      proc.exitCode = started.errno;
      setImmediate(() => {
        proc.connected = false;
        proc.emit('close', proc.exitCode, null);
        process.nextTick(() => proc.emit('disconnect'));
      });
      proc.emit('error', spawnError(started.errno, spec.file, spec.args));
    });
  } else {
    proc.pid = started.pid;
    proc.connected = true;
    proc._attachStdio(started);
    while (spec.stdio && proc.stdio.length < spec.stdio.length) proc.stdio.push(null);
    process.nextTick(() => proc.emit('spawn'));
  }

  process.nextTick(() => cluster.emit('fork', worker));
  cluster.workers[worker.id] = worker;
  return worker;
}

// How long an exiting primary waits for queued messages to reach its workers.
const EXIT_FLUSH_MS = 250;
let flushOnExit = false;

// Starts a worker in `slot` (a free one when undefined). `standby` starts a
// reload's successor beside the slot's current worker.
function startWorker(env, slot, standby = false) {
  cluster.setupPrimary();
  if (!flushOnExit) {
    flushOnExit = true;
    binding.onEvents(onCoreEvents);
    // A disconnect() right before process.exit() must still reach the
    // workers (Node writes it synchronously), or they drop their requests.
    process.on('exit', () => {
      uncorkAll();
      binding.flush(EXIT_FLUSH_MS);
    });
  }
  const spec = workerSpec(env);
  if (slot === undefined) slot = supervisor.freeSlot();
  Object.assign(spec, supervisor.nativeOptions(slot), { standby });
  const started = binding.fork(spec);
  if (started.pid == null && !ASYNC_SPAWN_ERRORS.has(getSystemErrorName(started.errno))) {
    // Node throws the spawn errors that are not "run-time" ones (EPERM from
    // uid/gid, ENOTDIR from cwd…); no Worker exists then.
    throw errnoException(started.errno, 'spawn');
  }
  const worker = attachWorker(started.id, slot, spec, started);
  // A successor (reload, recycle) starts with the env its predecessor had.
  worker._env = env;
  return worker;
}

cluster.fork = function fork(env) {
  return startWorker(env);
};

cluster.disconnect = function disconnect(cb) {
  const workers = Object.values(cluster.workers);
  if (workers.length === 0) {
    process.nextTick(() => intercom.emit('disconnect'));
  } else {
    for (const worker of workers) {
      if (worker.isConnected()) worker.disconnect();
    }
  }
  if (typeof cb === 'function') intercom.once('disconnect', cb);
};

// Should the primary die before the worker is gone, the reaper still gives
// it `killTimeout` ms to finish.
function disconnectWorker(worker, killTimeout) {
  worker.exitedAfterDisconnect = true;
  if (worker.process instanceof WorkerProcess) worker.process._uncork();
  binding.disconnect(worker.id, killTimeout);
  removeWorker(worker);
  return worker;
}

Worker.prototype.disconnect = function disconnect() {
  return disconnectWorker(this, supervisor.killTimeout());
};

Worker.prototype.destroy = function destroy(signo) {
  this.process.kill(signo || 'SIGTERM');
};

cluster._defaultPolicy = defaultPolicy;

const supervisor = require('./supervisor')(cluster, {
  startWorker, attachWorker, disconnectWorker, report: reportInBackground,
});

module.exports = cluster;
