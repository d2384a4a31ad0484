'use strict';
// Helpers shared by the *.test.js files (not a test file itself: node --test
// only runs files named *.test.js here).

const { after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');

// Resolves with the arguments of the next `event`; rejects after `ms`.
function waitFor(emitter, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, onEvent);
      reject(new Error(`timed out after ${ms} ms waiting for '${event}'`));
    }, ms);
    function onEvent(...args) {
      clearTimeout(timer);
      resolve(args);
    }
    emitter.once(event, onEvent);
  });
}

// The first message from `worker` of the given type.
function waitForMessage(worker, type, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      worker.removeListener('message', onMessage);
      reject(new Error(`timed out after ${ms} ms waiting for a '${type}' message`));
    }, ms);
    function onMessage(msg) {
      if (!msg || msg.type !== type) return;
      clearTimeout(timer);
      worker.removeListener('message', onMessage);
      resolve(msg);
    }
    worker.on('message', onMessage);
  });
}

// Keeps track of every worker `cluster` forks in this process (so cleanup
// reaches even those already dropped from cluster.workers), plus child
// primaries and stray worker pids the test file adds. killAll() kills all of
// them and waits (bounded) for the workers to be gone.
function trackCluster(cluster) {
  const forked = new Set();
  cluster.on('fork', (worker) => forked.add(worker));
  const children = new Set();
  const strayPids = new Set();

  async function killAll() {
    const exits = [];
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
    for (const w of forked) {
      if (w.isDead()) continue;
      exits.push(new Promise((resolve) => {
        const timer = setTimeout(resolve, 5000);
        w.once('exit', () => { clearTimeout(timer); resolve(); });
      }));
      w.process.kill('SIGKILL');
    }
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const pid of strayPids) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    }
    await Promise.all(exits);
  }

  return { forked, children, strayPids, killAll };
}

// Dead means no such process, or (Linux) a zombie waiting for a reaper.
function isGone(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (err.code === 'ESRCH') return true;
    throw err;
  }
  if (process.platform === 'linux') {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      return state === 'Z' || state === 'X';
    } catch {
      return true;
    }
  }
  return false;
}

// A port free on 127.0.0.1 a moment ago (bound, read, closed).
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    }).on('error', reject);
  });
}

// Polls until every pid is gone or `ms` have passed; returns those still alive.
async function pollUntilGone(pids, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const alive = pids.filter((pid) => !isGone(pid));
    if (alive.length === 0) return [];
    if (Date.now() >= deadline) return alive;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// The test side of fixtures/harness.js: a fixture primary started with
// startFixture(file, { args, env, execArgv, stdin }) and the JSON lines it
// prints (fx.messages; lines that are not JSON are kept as { raw }).
//   fx.wait(pred, what, ms)  the first message matching pred
//   fx.result(ms)            its { result }; rejects on its { error }
//   fx.waitExit(ms)          { code, signal } once it and its workers closed stdout/stderr
//   fx.exited                resolves { code, signal, at } when the primary process exits
//   fx.kill()                SIGKILLs the primary
// Every fixture still running, and every worker it reported ({ workerPid })
// that still runs that fixture file, is SIGKILLed by killFixtures(), which
// runs `after` each test file that requires this module (call it from an
// afterEach for more).
const RESULT_TIMEOUT = 30000;
const runningFixtures = new Set();
const fixtureWorkers = new Map(); // pid -> fixture file

class Fixture {
  constructor(file, { args = [], env = process.env, execArgv = [], stdin = 'ignore' } = {}) {
    this.file = file;
    this.name = path.basename(file);
    this.messages = [];
    this.stdout = '';
    this.stderr = '';
    this.waiters = new Set();
    this.exit = null;
    this.child = spawn(process.execPath, [...execArgv, file, ...args], { env, stdio: [stdin, 'pipe', 'pipe'] });
    this.pid = this.child.pid;
    runningFixtures.add(this);
    let buf = '';
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d) => {
      if (this.stdout.length < 100000) this.stdout += d;
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let msg;
        try { msg = JSON.parse(line); } catch { msg = { raw: line }; }
        if (msg === null || typeof msg !== 'object') msg = { raw: line };
        if (msg.workerPid) fixtureWorkers.set(msg.workerPid, file);
        this.messages.push(msg);
        this.check();
      }
    });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d) => {
      if (this.stderr.length < 100000) this.stderr += d;
    });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() }));
    });
    this.closed = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        this.exit = { code, signal };
        runningFixtures.delete(this);
        resolve(this.exit);
        this.check();
      });
    });
  }

  // Messages that are not the harness's own bookkeeping.
  output() {
    return this.messages.filter((m) => !m.workerPid);
  }

  describe() {
    const tail = this.stderr.length > 3000 ? `…${this.stderr.slice(-3000)}` : this.stderr;
    return `${this.name} (pid ${this.pid}, exit ${JSON.stringify(this.exit)})\nstdout: ${
      JSON.stringify(this.output()).slice(0, 3000)}\nstderr: ${tail}`;
  }

  check() {
    for (const w of this.waiters) {
      const found = this.messages.find(w.pred);
      if (found) w.done(null, found);
      else if (this.exit) w.done(new Error(`fixture exited before ${w.what}: ${this.describe()}`));
    }
  }

  wait(pred, what, ms = RESULT_TIMEOUT) {
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        what,
        done: (err, msg) => {
          clearTimeout(timer);
          this.waiters.delete(w);
          if (err) reject(err);
          else resolve(msg);
        },
      };
      const timer = setTimeout(() => w.done(new Error(`timed out after ${ms} ms waiting for ${what}: ${this.describe()}`)), ms);
      this.waiters.add(w);
      this.check();
    });
  }

  async result(ms) {
    const msg = await this.wait((m) => 'result' in m || 'error' in m, 'its result', ms);
    if ('error' in msg) throw new Error(`fixture failed in phase "${msg.phase}": ${msg.error}\n${this.describe()}`);
    return msg.result;
  }

  async waitExit(ms = 15000) {
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(resolve, ms, null); });
    const exit = await Promise.race([this.closed, timeout]);
    clearTimeout(timer);
    if (!exit) throw new Error(`did not exit within ${ms} ms: ${this.describe()}`);
    return exit;
  }

  kill() {
    if (!this.exit) this.child.kill('SIGKILL');
  }
}

function startFixture(file, options) {
  return new Fixture(file, options);
}

// A worker pid is killed only while it still runs its fixture file (pids get
// reused; never signal a stranger).
function killFixtures() {
  for (const fx of runningFixtures) fx.kill();
  for (const [pid, file] of fixtureWorkers) {
    let cmdline = '';
    try { cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { /* gone */ }
    if (cmdline.includes(file)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    } else {
      fixtureWorkers.delete(pid);
    }
  }
}
after(killFixtures);

// For fixtures that end with one result: run(label, args, env) starts
// `fixture`, and resolves, once the primary and its workers have closed
// stdout/stderr, with the result plus { stderr, exit }; rejects (after
// SIGKILLing the primary) if that takes more than `timeoutMs`.
function fixtureRunner(fixture, timeoutMs) {
  return async function run(label, args, env) {
    const fx = startFixture(fixture, { args, env });
    try {
      const result = await fx.result(timeoutMs);
      result.exit = await fx.waitExit(timeoutMs);
      result.stderr = fx.stderr;
      return result;
    } catch (e) {
      fx.kill();
      e.message = `${label}: ${e.message}`;
      throw e;
    }
  };
}

// One run of a fixture that ends with one result: its { result } (the error
// names `label`), after (bounded) its exit, as before the next case; a primary
// that does not exit in time is SIGKILLed.
async function fixtureResult(file, options, label, ms = 15000) {
  const fx = startFixture(file, options);
  try {
    return await fx.result(ms);
  } catch (e) {
    throw new Error(`${label}: no result\n${e.message}`);
  } finally {
    await fx.waitExit(ms).catch(() => fx.kill());
  }
}

// Runs `start` once, on first call, for several tests that assert on its result.
function runOnce(start) {
  let p;
  return () => {
    if (!p) p = start();
    return p;
  };
}

// A fixtureRunner result that did not fail.
function assertOk(r) {
  assert.equal(r.ok, true, `fixture failed: ${JSON.stringify(r)}\nstderr: ${r.stderr}`);
}

module.exports = {
  waitFor,
  waitForMessage,
  trackCluster,
  isGone,
  pollUntilGone,
  freePort,
  startFixture,
  killFixtures,
  fixtureRunner,
  fixtureResult,
  runOnce,
  assertOk,
};
