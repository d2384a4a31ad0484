'use strict';
// How workers go away: worker.disconnect(), cluster.disconnect(cb),
// kill()/destroy() and signals, workers exiting or disconnecting on their
// own, kill(0) probes, isDead/isConnected, and the primary's own lifetime
// (it exits once its workers are gone; its workers die when it is SIGKILLed).
//
// RCLUSTER_TEST_IMPL=node:cluster runs this file against Node's own cluster.

const { test, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { waitFor, waitForMessage, trackCluster, pollUntilGone, startFixture, killFixtures } = require('./helpers');

const cluster = require(process.env.RCLUSTER_TEST_IMPL || '..');

const FIXTURE = path.join(__dirname, 'fixtures', 'cluster-app.js');
const TEST_TIMEOUT = 15000;

// Every worker forked in this process, so cleanup reaches even those already
// dropped from cluster.workers; fixture primaries and their workers too.
const { killAll } = trackCluster(cluster);
afterEach(killAll);
afterEach(killFixtures);
after(killAll);

// Records the order of a worker's 'disconnect' and 'exit' events and what the
// worker looked like at each; resolves once both have happened.
function trackEnd(worker, ms = 10000) {
  const seen = [];
  const done = Promise.all([
    waitFor(worker, 'disconnect', ms).then(() => {
      seen.push({ event: 'disconnect', isConnected: worker.isConnected(), isDead: worker.isDead() });
    }),
    waitFor(worker, 'exit', ms).then(([code, signal]) => {
      seen.push({ event: 'exit', code, signal, isConnected: worker.isConnected(), isDead: worker.isDead() });
    }),
  ]);
  // The listeners above run synchronously inside emit(), so `seen` reflects
  // the state at each event; also note the cluster-level events.
  const clusterSeen = [];
  const onDisconnect = (w) => { if (w === worker) clusterSeen.push('disconnect'); };
  const onExit = (w, code, signal) => { if (w === worker) clusterSeen.push(['exit', code, signal]); };
  cluster.on('disconnect', onDisconnect);
  cluster.on('exit', onExit);
  return done.then(() => ({ seen, clusterSeen, exit: seen.find((e) => e.event === 'exit') }))
    .finally(() => {
      cluster.off('disconnect', onDisconnect);
      cluster.off('exit', onExit);
    });
}

// Runs the fixture as a separate primary (fixtures/harness.js).
function spawnPrimary(args) {
  return startFixture(FIXTURE, { args });
}

// Resolves with { code, signal } when the fixture primary exits, or rejects after `ms`.
async function waitForExit(fx, ms) {
  let timer;
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`process did not exit within ${ms} ms: ${fx.describe()}`)), ms);
  });
  try {
    return await Promise.race([fx.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// What the fixture primary reported of its workers' exits, once all its output is read.
async function workerExits(fx) {
  await fx.waitExit(5000);
  return fx.messages.filter((m) => m.workerExit).map((m) => m.workerExit);
}

function setup() {
  cluster.setupPrimary({ exec: FIXTURE, args: [], execArgv: [], silent: false });
}

async function forkOnline(env) {
  const worker = cluster.fork(env);
  await waitFor(worker, 'online');
  return worker;
}

test('worker.disconnect(): exitedAfterDisconnect, then disconnect, then exit 0', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const worker = cluster.fork({ RC_MODE: 'listen' });
  await waitFor(worker, 'listening');
  assert.equal(worker.exitedAfterDisconnect, undefined);
  assert.equal(worker.isConnected(), true);
  assert.equal(worker.isDead(), false);

  const end = trackEnd(worker);
  assert.equal(worker.disconnect(), worker, 'disconnect() returns the worker');
  assert.equal(worker.exitedAfterDisconnect, true);
  const { seen, clusterSeen } = await end;

  assert.deepEqual(seen, [
    { event: 'disconnect', isConnected: false, isDead: false },
    { event: 'exit', code: 0, signal: null, isConnected: false, isDead: true },
  ]);
  assert.deepEqual(clusterSeen, ['disconnect', ['exit', 0, null]]);
  assert.equal(worker.exitedAfterDisconnect, true);
  assert.equal(worker.state, 'dead');
  assert.equal(worker.process.exitCode, 0);
  assert.equal(worker.process.signalCode, null);
  assert.equal(worker.id in cluster.workers, false);
});

test('cluster.disconnect(cb) with several workers calls cb once, when they are gone', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const workers = [];
  for (let i = 0; i < 3; i++) workers.push(cluster.fork({ RC_MODE: 'listen' }));
  await Promise.all(workers.map((w) => waitFor(w, 'listening')));

  const ends = workers.map((w) => trackEnd(w));
  let calls = 0;
  let workersAtCb;
  const cbCalled = new Promise((resolve) => {
    cluster.disconnect(function cb(...args) {
      calls++;
      workersAtCb = Object.keys(cluster.workers);
      assert.deepEqual(args, []);
      resolve();
    });
  });
  for (const w of workers) assert.equal(w.exitedAfterDisconnect, true);
  await cbCalled;
  assert.deepEqual(workersAtCb, [], 'cluster.workers is empty when cb runs');

  const results = await Promise.all(ends);
  // Give a stray second call a chance to show up.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(calls, 1, 'cb is called exactly once');
  for (const [i, r] of results.entries()) {
    assert.deepEqual(r.exit.code, 0, `worker ${workers[i].id} exit code`);
    assert.equal(r.exit.signal, null);
    assert.equal(workers[i].exitedAfterDisconnect, true);
    assert.equal(workers[i].isDead(), true);
    assert.equal(workers[i].isConnected(), false);
  }
  assert.deepEqual(Object.keys(cluster.workers), []);

  // With no workers left, the callback still comes (asynchronously).
  let sync = true;
  const again = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('cb not called with no workers')), 5000);
    cluster.disconnect(() => {
      clearTimeout(timer);
      resolve(sync);
    });
  });
  sync = false;
  assert.equal(await again, false, 'cb is not called synchronously');
});

for (const method of ['kill', 'destroy']) {
  test(`worker.${method}() defaults to SIGTERM; exitedAfterDisconnect is false`, { timeout: TEST_TIMEOUT }, async () => {
    setup();
    const worker = await forkOnline({ RC_MODE: 'idle' });
    const end = trackEnd(worker);
    worker[method]();
    const { exit, clusterSeen } = await end;
    assert.equal(exit.code, null);
    assert.equal(exit.signal, 'SIGTERM');
    assert.ok(clusterSeen.some((e) => Array.isArray(e) && e[0] === 'exit' && e[1] === null && e[2] === 'SIGTERM'));
    assert.equal(worker.exitedAfterDisconnect, false);
    assert.equal(worker.process.killed, true);
    assert.equal(worker.process.signalCode, 'SIGTERM');
    assert.equal(worker.process.exitCode, null);
    assert.equal(worker.isDead(), true);
    assert.equal(worker.isConnected(), false);
    assert.equal(worker.id in cluster.workers, false);
  });
}

test("worker.kill('SIGKILL')", { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const worker = await forkOnline({ RC_MODE: 'idle' });
  const end = trackEnd(worker);
  worker.kill('SIGKILL');
  const { exit } = await end;
  assert.equal(exit.code, null);
  assert.equal(exit.signal, 'SIGKILL');
  assert.equal(worker.exitedAfterDisconnect, false);
  assert.equal(worker.process.signalCode, 'SIGKILL');
  assert.equal(worker.process.killed, true);
  assert.equal(worker.id in cluster.workers, false);
});

test('a worker that calls process.exit(3)', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const worker = cluster.fork({ RC_MODE: 'exit', RC_EXIT_CODE: '3' });
  const { exit, clusterSeen } = await trackEnd(worker);
  assert.equal(exit.code, 3);
  assert.equal(exit.signal, null);
  assert.ok(clusterSeen.some((e) => Array.isArray(e) && e[0] === 'exit' && e[1] === 3 && e[2] === null));
  assert.equal(worker.exitedAfterDisconnect, false);
  assert.equal(worker.process.exitCode, 3);
  assert.equal(worker.process.signalCode, null);
  assert.equal(worker.process.killed, false);
  assert.equal(worker.isDead(), true);
  assert.equal(worker.id in cluster.workers, false);
});

test('a worker that calls cluster.worker.disconnect() itself', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const worker = cluster.fork({ RC_MODE: 'self-disconnect' });
  const { seen, exit } = await trackEnd(worker);
  assert.equal(seen[0].event, 'disconnect');
  assert.equal(exit.code, 0);
  assert.equal(exit.signal, null);
  assert.equal(worker.exitedAfterDisconnect, true);
  assert.equal(worker.isDead(), true);
  assert.equal(worker.isConnected(), false);
  assert.equal(worker.id in cluster.workers, false);
});

test('worker.process.kill(0) probes without harming the worker', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const worker = await forkOnline({ RC_MODE: 'idle' });
  assert.equal(worker.process.kill(0), true);
  assert.equal(worker.process.kill(0), true);
  // Still alive and answering on its channel.
  const pong = waitForMessage(worker, 'pong');
  worker.send({ type: 'ping' });
  await pong;
  assert.equal(worker.isDead(), false);
  assert.equal(worker.isConnected(), true);
  assert.equal(worker.process.exitCode, null);
  assert.equal(worker.process.signalCode, null);

  const end = trackEnd(worker);
  worker.process.kill('SIGKILL');
  await end;
  assert.equal(worker.process.kill(0), false, 'kill(0) on an exited worker is false');
  assert.equal(worker.process.kill(), false);
});

test('isDead() / isConnected() transitions', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const worker = cluster.fork({ RC_MODE: 'idle' });
  assert.equal(worker.isConnected(), true, 'connected right after fork()');
  assert.equal(worker.isDead(), false);
  await waitFor(worker, 'online');
  assert.equal(worker.isConnected(), true);
  assert.equal(worker.isDead(), false);
  assert.equal(worker.process.connected, true);

  const end = trackEnd(worker);
  worker.disconnect();
  const { seen } = await end;
  assert.deepEqual(seen.map((e) => [e.event, e.isConnected, e.isDead]), [
    ['disconnect', false, false],
    ['exit', false, true],
  ]);
  assert.equal(worker.process.connected, false);
  assert.equal(worker.isConnected(), false);
  assert.equal(worker.isDead(), true);
});

test('the primary exits by itself once its only worker has exited', { timeout: TEST_TIMEOUT }, async () => {
  const fx = spawnPrimary(['exit-alone']);
  const { code, signal } = await waitForExit(fx, 5000);
  assert.equal(signal, null, `stderr: ${fx.stderr}`);
  assert.equal(code, 0, `stderr: ${fx.stderr}`);
  assert.deepEqual(await workerExits(fx), [{ code: 0, signal: null }]);
});

test('the primary exits by itself after cluster.disconnect()', { timeout: TEST_TIMEOUT }, async () => {
  const fx = spawnPrimary(['disconnect-alone']);
  const { code, signal } = await waitForExit(fx, 5000);
  assert.equal(signal, null, `stderr: ${fx.stderr}`);
  assert.equal(code, 0, `stderr: ${fx.stderr}`);
  const exits = await workerExits(fx);
  assert.deepEqual(exits.find((e) => e.id === 1), { id: 1, code: 0, signal: null });
  assert.deepEqual(exits.find((e) => e.id === 2), { id: 2, code: 0, signal: null });
  assert.ok(fx.messages.some((m) => m.disconnected), JSON.stringify(fx.output()));
});

test('workers die when the primary is SIGKILLed', { timeout: TEST_TIMEOUT }, async () => {
  const fx = spawnPrimary(['orphan']);
  const { pids } = await fx.wait((m) => m.pids, 'the pids of its workers', 10000);
  assert.equal(pids.length, 2);
  for (const pid of pids) {
    assert.equal(process.kill(pid, 0), true, `worker ${pid} is alive before the primary dies`);
  }

  fx.kill();
  const { signal } = await waitForExit(fx, 5000);
  assert.equal(signal, 'SIGKILL');

  // Orphans may linger briefly as zombies until init reaps them.
  const alive = await pollUntilGone(pids, 3000);
  assert.deepEqual(alive, [], 'workers still alive 3 s after the primary was SIGKILLed');
});
