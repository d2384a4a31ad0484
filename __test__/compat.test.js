'use strict';
// Behaviours found by running Node's own cluster tests against rcluster.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const cluster = require('..');
const { pollUntilGone, startFixture } = require('./helpers');

const fixture = path.join(__dirname, 'fixtures', 'compat-primary.js');

// Starts a fixture primary (fixtures/harness.js); lines its workers print
// that are not JSON are in fx.messages as { raw }.
function start(which, env = {}) {
  return startFixture(fixture, { args: [which], env: { ...process.env, COMPAT_CASE: which, ...env } });
}

// Runs a fixture primary until it and its workers are done (bounded).
async function run(which, env) {
  const fx = start(which, env);
  try {
    await fx.waitExit(20000);
  } catch (e) {
    fx.kill();
    throw new Error(`${which}: ${e.message}`);
  }
  return fx;
}

test("workers inherit the primary's stdout and stderr", async () => {
  const fx = await run('inherit');
  assert.ok(fx.messages.some((m) => m.raw === 'stdout-from-worker'), JSON.stringify(fx.messages));
  assert.match(fx.stderr, /stderr-from-worker/);
});

test('stdio entries past fd 2 and the ipc position', async () => {
  const fx = await run('fd3');
  assert.deepEqual(await fx.result(), { got: 'via-fd3', length: 5, ipcEntry: null });
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
  const fx = start('orphans', { MARK_FILE: mark });
  const { pids } = await fx.wait((m) => m.pids, 'the worker pids', 20000);
  fx.kill();
  // Timed from the primary's death, not from the close of its output (which
  // the workers hold open until they are gone).
  const { signal, at } = await fx.exited;
  assert.equal(signal, 'SIGKILL');
  assert.equal(pids.length, 2);
  assert.deepEqual(await pollUntilGone(pids, 5000), [], 'every worker is gone');
  assert.ok(Date.now() - at < 2500, `gone within the grace period (${Date.now() - at} ms)`);
  await fx.waitExit(20000);
  // Worker 1 was not blocked: it saw the channel close and exited normally.
  assert.equal(fs.readFileSync(`${mark}1`, 'utf8'), 'exit handler ran');
  fs.rmSync(`${mark}1`);
  assert.equal(fs.existsSync(`${mark}2`), false, 'the blocked worker was killed');
});

test("a worker's server.close() completes after the primary closes sockets it was sent", async () => {
  const fx = await run('socket-list');
  assert.deepEqual(await fx.result(), { closed: true, receivedWasSocket: true });
});

test('a second primary cannot take a port the first listens on', async () => {
  const first = start('bind-twice', { PORT: '0' });
  const { listening: port } = await first.wait((m) => m.listening, 'its port', 20000);
  const second = await run('bind-twice', { PORT: String(port) });
  first.kill();
  await first.waitExit(20000);
  assert.deepEqual(second.messages.find((m) => 'bindError' in m), { bindError: 'EADDRINUSE' });
});

test("a crashed worker's Unix socket is removed when no restart is coming", async () => {
  const fx = await run('unix-crash');
  assert.deepEqual(await fx.result(), { existed: true, after: false });
});
