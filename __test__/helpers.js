'use strict';
// Helpers shared by the *.test.js files (not a test file itself: node --test
// only runs files named *.test.js here).

const { after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
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

// A runner for fixture primaries that print one `{"fixtureResult": {...}}`
// line on stdout (listen-fixture.js, msg-fixture.js). Call at the top level
// of a test file: every primary still running is SIGKILLed in `after`.
//
// run(label, args, env) spawns `node fixture ...args` and resolves, once the
// primary and its workers have closed stdout/stderr, with the result plus
// { stderr, exit }; rejects (after SIGKILLing the primary) if that takes more
// than `timeoutMs`, or if no result line was printed.
function fixtureRunner(fixture, timeoutMs) {
  const running = new Set();
  after(() => {
    for (const child of running) child.kill('SIGKILL');
    running.clear();
  });

  return function run(label, args, env) {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [fixture, ...args], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      running.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
      child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
      let exited = null;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${label}: no result within ${timeoutMs} ms ` +
          `(exit: ${JSON.stringify(exited)})\nstdout: ${stdout}\nstderr: ${stderr}`));
      }, timeoutMs);
      child.on('exit', (code, signal) => {
        exited = { code, signal };
        running.delete(child);
      });
      // 'close' waits for the workers too (they share stdout/stderr).
      child.on('close', () => {
        clearTimeout(timer);
        running.delete(child);
        const line = stdout.split('\n').reverse().find((l) => l.startsWith('{"fixtureResult"'));
        if (!line) {
          reject(new Error(`${label}: no result line (exit ${JSON.stringify(exited)})\n` +
            `stdout: ${stdout}\nstderr: ${stderr}`));
          return;
        }
        const result = JSON.parse(line).fixtureResult;
        result.stderr = stderr;
        result.exit = exited;
        resolve(result);
      });
    });
  };
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
  assert.equal(r.ok, true, `fixture failed in phase "${r.phase}": ${r.error}\nstderr: ${r.stderr}`);
}

module.exports = {
  waitFor,
  waitForMessage,
  trackCluster,
  isGone,
  pollUntilGone,
  fixtureRunner,
  runOnce,
  assertOk,
};
