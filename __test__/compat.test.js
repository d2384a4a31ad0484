'use strict';
// Behaviours found by running Node's own cluster tests against rcluster.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const cluster = require('..');
const { isGone } = require('./helpers');

const fixture = path.join(__dirname, 'fixtures', 'compat-primary.js');
const children = new Set();
const pidsToKill = new Set();
test.after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const pid of pidsToKill) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

// Runs a fixture primary; resolves with its stdout lines and exit code.
function run(which, env = {}, onLine = () => {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fixture, which], {
      env: { ...process.env, COMPAT_CASE: which, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let partial = '';
    let stderr = '';
    const all = [];
    child.stdout.on('data', (d) => {
      all.push(String(d));
      const lines = (partial + d).split('\n');
      partial = lines.pop();
      for (const l of lines) onLine(l, child);
    });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${which}: timed out\n${stderr}`)); }, 20000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, lines: all.join('').split('\n').filter(Boolean), stderr });
    });
  });
}

test("workers inherit the primary's stdout and stderr", async () => {
  const r = await run('inherit');
  assert.ok(r.lines.includes('stdout-from-worker'), JSON.stringify(r.lines));
  assert.match(r.stderr, /stderr-from-worker/);
});

test('stdio entries past fd 2 and the ipc position', async () => {
  const r = await run('fd3');
  const result = JSON.parse(r.lines.find((l) => l.startsWith('{')));
  assert.deepEqual(result, { got: 'via-fd3', length: 5, ipcEntry: null });
});

test('Worker is callable without new, as in Node', () => {
  const w = cluster.Worker({ id: 5 });
  assert.ok(w instanceof cluster.Worker);
  assert.equal(w.id, 5);
  assert.equal(new cluster.Worker().state, 'none');
  assert.equal(new cluster.Worker().exitedAfterDisconnect, undefined);
  const obj = {};
  Object.setPrototypeOf(obj, cluster.Worker.prototype);
  cluster.Worker.call(obj, { id: 3, state: 'online' });
  assert.equal(obj.id, 3);
  assert.equal(obj.state, 'online');
});

test('a Worker is a node:cluster Worker, none of whose methods it uses', () => {
  const NodeWorker = require('node:cluster').Worker;
  const w = new cluster.Worker({ id: 7 });
  assert.ok(w instanceof NodeWorker);
  assert.ok(w instanceof require('node:events'));
  for (const name of Object.getOwnPropertyNames(NodeWorker.prototype)) {
    if (name !== 'constructor') assert.notEqual(w[name], NodeWorker.prototype[name], name);
  }
});

test('a dead primary: workers exit by themselves, blocked ones are killed', async () => {
  const mark = path.join(os.tmpdir(), `rcluster-orphans-${process.pid}-`);
  let pids;
  const r = await run('orphans', { MARK_FILE: mark }, (line, child) => {
    const msg = JSON.parse(line);
    if (msg.pids) {
      pids = msg.pids;
      for (const pid of pids) pidsToKill.add(pid);
      child.kill('SIGKILL');
    }
  });
  assert.equal(r.signal, 'SIGKILL');
  assert.equal(pids.length, 2);
  const t0 = Date.now();
  while (!pids.every(isGone) && Date.now() - t0 < 5000) await new Promise((res) => setTimeout(res, 20));
  assert.ok(pids.every(isGone), 'every worker is gone');
  assert.ok(Date.now() - t0 < 2500, `gone within the grace period (${Date.now() - t0} ms)`);
  // Worker 1 was not blocked: it saw the channel close and exited normally.
  assert.equal(fs.readFileSync(`${mark}1`, 'utf8'), 'exit handler ran');
  fs.rmSync(`${mark}1`);
  assert.equal(fs.existsSync(`${mark}2`), false, 'the blocked worker was killed');
});

test("a worker's server.close() completes after the primary closes sockets it was sent", async () => {
  const r = await run('socket-list');
  const result = JSON.parse(r.lines.find((l) => l.includes('closed')));
  assert.deepEqual(result, { closed: true, receivedWasSocket: true });
});

test('a second primary cannot take a port the first listens on', async () => {
  let port;
  let second;
  await run('bind-twice', { PORT: '0' }, async (line, first) => {
    const msg = JSON.parse(line);
    if (msg.listening && !port) {
      port = msg.listening;
      second = await run('bind-twice', { PORT: String(port) });
      first.kill('SIGKILL');
    }
  });
  const line = second.lines.find((l) => l.includes('bindError'));
  assert.deepEqual(JSON.parse(line), { bindError: 'EADDRINUSE' });
});

test("a crashed worker's Unix socket is removed when no restart is coming", async () => {
  const r = await run('unix-crash');
  const result = JSON.parse(r.lines.find((l) => l.startsWith('{')));
  assert.deepEqual(result, { existed: true, after: false });
});
