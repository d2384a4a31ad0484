'use strict';
// rcluster's additions to the cluster API: crash-restart, hang detection and
// recycling (decided and timed in the Rust core), and the lifecycle
// operations reload(), shutdown(), scale() and stats(), which orchestrate
// workers from here.

const binding = require('./binding');
const { codes, spawnError } = require('./errors');
const { validateObject, validateBoolean, validateCount } = require('./validate');

const DEFAULT_READY_TIMEOUT = 30000;
const DEFAULT_KILL_TIMEOUT = 10000;
// Heartbeats come this many times per hangTimeout.
const HEARTBEATS_PER_TIMEOUT = 4;

// Durations the core times beyond this (~31 years) are certainly mistakes.
const MAX_MS = 1e12;
// The longest delay a JS timer holds (longer ones fire after 1 ms): the bound
// for the timeouts reload/scale/shutdown time here.
const MAX_TIMER_MS = 2 ** 31 - 1;

// The core counts a slot's restarts in a u32.
const MAX_RESTARTS = 0xFFFFFFFF;

const SIZE_UNITS = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };

// 0 (or '0M') turns the limit off.
function parseBytes(value, name) {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0 || value > Number.MAX_SAFE_INTEGER) {
      throw codes.ERR_OUT_OF_RANGE(name, `>= 0 && <= ${Number.MAX_SAFE_INTEGER}`, value);
    }
    return value;
  }
  if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
    const unit = m && SIZE_UNITS[m[2].toLowerCase()];
    if (!unit) throw codes.ERR_INVALID_ARG_VALUE(name, value, "must be a number of bytes or a size like '512M'");
    return Number(m[1]) * unit;
  }
  throw codes.ERR_INVALID_ARG_TYPE(name, ['number', 'string'], value);
}

function parseMs(value, name, { allowZero = false, max = MAX_MS } = {}) {
  if (typeof value !== 'number') throw codes.ERR_INVALID_ARG_TYPE(name, 'number', value);
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0) || value > max) {
    throw codes.ERR_OUT_OF_RANGE(name, `${allowZero ? '>= 0' : '> 0'} && <= ${max}`, value);
  }
  return value;
}

const RESTART_KEYS = ['initialDelay', 'maxDelay', 'factor', 'stableAfter', 'maxRestarts', 'window'];

function parseRestart(value) {
  if (value === undefined || value === false) return null;
  if (value === true) return {};
  validateObject(value, 'options.restart');
  const out = {};
  for (const key of Object.keys(value)) {
    if (!RESTART_KEYS.includes(key)) {
      throw codes.ERR_INVALID_ARG_VALUE(`options.restart.${key}`, value[key], `is not one of ${RESTART_KEYS.join(', ')}`);
    }
    if (value[key] === undefined) continue;
    if (key === 'factor') {
      if (typeof value.factor !== 'number') throw codes.ERR_INVALID_ARG_TYPE('options.restart.factor', 'number', value.factor);
      if (!(value.factor >= 1 && value.factor <= 1000)) throw codes.ERR_OUT_OF_RANGE('options.restart.factor', '>= 1 && <= 1000', value.factor);
    } else if (key === 'maxRestarts') {
      validateCount(value.maxRestarts, 'options.restart.maxRestarts', 0, MAX_RESTARTS);
    } else {
      parseMs(value[key], `options.restart.${key}`, { allowZero: key === 'initialDelay' || key === 'stableAfter' });
    }
    out[key] = value[key];
  }
  return out;
}

module.exports = function createSupervisor(cluster, { startWorker, attachWorker, disconnectWorker, report }) {
  // What setupPrimary said, parsed.
  let config = { restart: null, hangTimeout: 0, maxMemory: 0, maxAge: 0, killTimeout: DEFAULT_KILL_TIMEOUT };
  // What the core was told (it starts with the default).
  // Slots (free, pending restarts, restart counts) are the core's: ask it.
  let queue = Promise.resolve(); // reloads and recycles, one at a time
  let signalHandlers = null;
  let shuttingDown = null;

  // (`report`: a failed background reload or recycle, see primary.js
  // reportInBackground.)

  function supervised() {
    return Boolean(config.restart || config.hangTimeout || config.maxMemory || config.maxAge);
  }

  // Called by setupPrimary with the merged settings: checks them all and
  // returns what applies them, so that a setupPrimary() that throws later
  // (its metrics port in use) has changed nothing.
  function prepare(settings) {
    const next = {
      restart: parseRestart(settings.restart),
      hangTimeout: settings.hangTimeout === undefined ? 0 : parseMs(settings.hangTimeout, 'options.hangTimeout', { allowZero: true }),
      maxMemory: settings.maxMemory === undefined ? 0 : parseBytes(settings.maxMemory, 'options.maxMemory'),
      maxAge: settings.maxAge === undefined ? 0 : parseMs(settings.maxAge, 'options.maxAge'),
      killTimeout: settings.killTimeout === undefined
        ? DEFAULT_KILL_TIMEOUT : parseMs(settings.killTimeout, 'options.killTimeout', { max: MAX_TIMER_MS }),
    };
    if (settings.signals !== undefined) validateBoolean(settings.signals, 'options.signals');
    return function configure() {
      if (next.killTimeout !== config.killTimeout) binding.setKillTimeout(next.killTimeout);
      config = next;
      if (settings.signals && !signalHandlers) installSignals();
      if (settings.signals === false && signalHandlers) removeSignals();
    };
  }

  function installSignals() {
    const stop = () => {
      cluster.shutdown().then(() => process.exit(0), () => process.exit(1));
    };
    const reload = () => {
      cluster.reload().catch(report);
    };
    signalHandlers = { SIGTERM: stop, SIGINT: stop, SIGHUP: reload };
    for (const [sig, fn] of Object.entries(signalHandlers)) process.on(sig, fn);
  }

  function removeSignals() {
    for (const [sig, fn] of Object.entries(signalHandlers)) process.off(sig, fn);
    signalHandlers = null;
  }

  function workerEnv() {
    return config.hangTimeout
      ? { RCLUSTER_HEARTBEAT_MS: String(Math.max(20, Math.floor(config.hangTimeout / HEARTBEATS_PER_TIMEOUT))) }
      : {};
  }

  // Every worker tells the core its slot; supervision only when configured.
  function nativeOptions(slot) {
    if (!supervised()) return { slot };
    return {
      slot,
      restart: config.restart || undefined,
      hangTimeout: config.hangTimeout || undefined,
      maxMemory: config.maxMemory || undefined,
      maxAge: config.maxAge || undefined,
    };
  }

  function liveWorkers() {
    return Object.values(cluster.workers).filter((w) => !w.isDead());
  }

  function freeSlot() {
    return binding.slots().free;
  }

  // The core restarted a slot by itself, with the slot's spawn spec: give the
  // new process a Worker.
  function onRespawned(ev) {
    attachWorker(ev.id, ev.slot, JSON.parse(ev.json), ev);
  }

  function onEvent(worker, ev) {
    switch (ev.kind) {
      case 'unresponsive':
        cluster.emit('unresponsive', worker, ev.ms);
        break;
      case 'recycle':
        cluster.emit('recycle', worker, ev.reason);
        enqueue(() => replace(worker, {}).catch(report));
        break;
      // A restart of `worker`'s slot could not be spawned (its cwd is gone,
      // say): the core counts it as a crash, then retries after the backoff
      // ('restarting') or gives up ('crashloop').
      case 'restartFailed': {
        const { file, args } = JSON.parse(ev.json);
        report(codes.ERR_RCLUSTER_RESTART(ev.slot, spawnError(ev.code, file, args)));
        break;
      }
      case 'restarting':
        cluster.emit('restarting', worker, ev.ms);
        break;
      case 'crashloop':
        cluster.emit('crashloop', worker, { slot: ev.slot, crashes: ev.crashes });
        break;
      default:
        break;
    }
  }

  // Reloads, recycles and scaling run one at a time, in the order asked.
  function enqueue(task) {
    const run = queue.then(task, task);
    queue = run.catch(() => {});
    return run;
  }

  function listenKeys(worker) {
    return new Set((worker._listening || []).map((a) => `${a.addressType}:${a.address}:${a.port}`));
  }

  cluster.on('listening', (worker, address) => {
    (worker._listening || (worker._listening = [])).push(address);
  });

  // Asks a worker to leave once (a second disconnect would make Node's
  // worker-side code throw), within `killTimeout` ms.
  function retire(worker, killTimeout) {
    if (worker.isConnected() && !worker.exitedAfterDisconnect) disconnectWorker(worker, killTimeout);
  }

  function waitExit(worker, killTimeout) {
    if (worker.isDead()) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => worker.process.kill('SIGKILL'), killTimeout);
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // Resolves once `fresh` listens on every address in `keys` (or is online,
  // when there are none); rejects if it dies, cannot be spawned, or takes
  // longer than `timeout`.
  function waitReady(fresh, keys, timeout) {
    return new Promise((resolve, reject) => {
      const pending = new Set(keys);
      const done = (err) => {
        clearTimeout(timer);
        fresh.off('listening', onListening);
        fresh.off('online', onOnline);
        fresh.off('exit', onExit);
        fresh.off('error', done);
        if (err) reject(err);
        else resolve();
      };
      const onListening = (a) => {
        pending.delete(`${a.addressType}:${a.address}:${a.port}`);
        if (pending.size === 0) done();
      };
      const onOnline = () => {
        if (keys.size === 0) done();
      };
      const onExit = (code, signal) => {
        done(codes.ERR_RCLUSTER_NOT_READY(`replacement worker ${fresh.id} exited (${signal || code}) before it was ready`));
      };
      const timer = setTimeout(() => {
        done(codes.ERR_RCLUSTER_NOT_READY(`replacement worker ${fresh.id} was not ready within ${timeout} ms`));
      }, timeout);
      fresh.on('listening', onListening);
      fresh.on('online', onOnline);
      fresh.once('exit', onExit);
      // A successor that cannot be spawned (ENOENT, EACCES…) never exits.
      fresh.once('error', done);
    });
  }

  // Starts a successor for `old` in its slot, waits until it serves what
  // `old` served, then retires `old` gracefully.
  async function replace(old, { readyTimeout = DEFAULT_READY_TIMEOUT, killTimeout = config.killTimeout }) {
    if (old.isDead() || !cluster.workers[old.id]) return;
    const keys = listenKeys(old);
    const fresh = startWorker(old._env, old.slot, true);
    try {
      await waitReady(fresh, keys, readyTimeout);
    } catch (err) {
      fresh.process.kill('SIGKILL');
      throw err;
    }
    binding.promote(fresh.id);
    retire(old, killTimeout);
    await waitExit(old, killTimeout);
  }

  function checkOptions(options, name) {
    if (options === undefined) return {};
    validateObject(options, name);
    const out = {};
    for (const key of ['readyTimeout', 'killTimeout', 'timeout']) {
      if (options[key] !== undefined) out[key] = parseMs(options[key], `${name}.${key}`, { max: MAX_TIMER_MS });
    }
    return out;
  }

  cluster.reload = function reload(options) {
    const opts = checkOptions(options, 'options');
    binding.countReload();
    return enqueue(async () => {
      const workers = liveWorkers().sort((a, b) => a.slot - b.slot);
      for (const w of workers) await replace(w, opts);
    });
  };

  cluster.shutdown = function shutdown(options) {
    const { timeout = config.killTimeout } = checkOptions(options, 'options');
    if (shuttingDown) return shuttingDown;
    shuttingDown = (async () => {
      for (const slot of binding.slots().occupied) binding.unsupervise(slot);
      const workers = Object.values(cluster.workers);
      for (const w of workers) retire(w, timeout);
      await Promise.all(workers.map((w) => waitExit(w, timeout)));
    })().finally(() => { shuttingDown = null; });
    return shuttingDown;
  };

  cluster.scale = function scale(n, options) {
    validateCount(n, 'n');
    const { readyTimeout = DEFAULT_READY_TIMEOUT, killTimeout = config.killTimeout } = checkOptions(options, 'options');
    return enqueue(async () => {
      // The core's count: a slot waiting out its restart backoff counts (it
      // will be back), and so does a restart JS has not heard of yet.
      const { occupied, pending } = binding.slots();
      const taken = new Set(occupied);
      const live = liveWorkers().filter((w) => taken.has(w.slot)).sort((a, b) => a.slot - b.slot);
      const current = occupied.length;
      if (n > current) {
        const keys = live.length ? listenKeys(live[0]) : new Set();
        const fresh = [];
        for (let i = current; i < n; i++) fresh.push(startWorker());
        await Promise.all(fresh.map((w) => waitReady(w, keys, readyTimeout)));
      } else if (n < current) {
        let excess = current - n;
        // Cancel pending restarts first (highest slots), then retire workers.
        for (const slot of pending.reverse()) {
          if (excess === 0) break;
          binding.unsupervise(slot, true);
          excess--;
        }
        const retiring = live.slice(Math.max(0, live.length - excess));
        for (const w of retiring) {
          binding.unsupervise(w.slot, true);
          retire(w, killTimeout);
        }
        await Promise.all(retiring.map((w) => waitExit(w, killTimeout)));
      }
      return binding.slots().occupied.length;
    });
  };

  cluster.stats = function stats() {
    const now = Date.now();
    const restarts = new Map(binding.slots().restarts.map((r) => [r.slot, r.restarts]));
    const workers = [];
    const totals = { workers: 0, rss: 0, cpuUser: 0, cpuSystem: 0, handoffs: 0, restarts: 0 };
    for (const w of Object.values(cluster.workers)) {
      const native = binding.workerStats(w.id);
      const entry = {
        id: w.id,
        pid: w.process.pid,
        slot: w.slot,
        state: w.state,
        uptime: now - w.startedAt,
        restarts: restarts.get(w.slot) || 0,
        rss: native && native.rss != null ? native.rss : null,
        cpu: native && native.cpuUser != null ? { user: native.cpuUser, system: native.cpuSystem } : null,
        handoffs: native ? native.handoffs : 0,
      };
      workers.push(entry);
      totals.workers++;
      totals.rss += entry.rss || 0;
      totals.cpuUser += entry.cpu ? entry.cpu.user : 0;
      totals.cpuSystem += entry.cpu ? entry.cpu.system : 0;
      totals.handoffs += entry.handoffs;
    }
    for (const n of restarts.values()) totals.restarts += n;
    // The reuseport queue watcher's counters (the primary's, not per worker).
    const load = binding.loadStats();
    totals.stalls = load.stalls;
    totals.stalledTaken = load.taken;
    const own = binding.processUsage(process.pid);
    const primary = {
      pid: process.pid,
      rss: own ? own.rss : null,
      cpu: own ? { user: own.cpuUser, system: own.cpuSystem } : null,
    };
    return { workers, totals, primary };
  };

  const killTimeout = () => config.killTimeout;

  return { prepare, killTimeout, workerEnv, nativeOptions, freeSlot, onRespawned, onEvent };
};

// The bounds the CLI checks its flags against.
module.exports.limits = { MAX_MS, MAX_TIMER_MS, MAX_RESTARTS, DEFAULT_KILL_TIMEOUT };
