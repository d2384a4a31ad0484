'use strict';
// The reaper (src/reaper.rs): what becomes of workers when their primary
// exits, and how long the reaper itself stays around.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const cluster = require('..');
const { isGone, pollUntilGone, startFixture, trackCluster, waitFor } = require('./helpers');

const fixture = path.join(__dirname, 'fixtures', 'reaper-primary.js');

// Reapers the fixtures reported: killFixtures() (helpers.js) reaches the
// primaries and their workers, not these. Killed only while still a reaper.
const reapers = new Set();
test.after(() => {
  for (const pid of reapers) {
    let comm = '';
    try { comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { /* gone */ }
    if (comm !== 'rcluster-reaper') continue;
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Starts a fixture primary (fixtures/harness.js). report(key) resolves with
// its first line that has `key`; `exited` with the time its process exited.
function start(which, env = {}) {
  const fx = startFixture(fixture, { args: [which], env: { ...process.env, REAPER_CASE: which, ...env } });
  const report = async (key, ms = 10000) => {
    const msg = await fx.wait((m) => key in m, `its ${key}`, ms);
    if (msg.reaper) reapers.add(msg.reaper);
    return msg;
  };
  return { fx, report, exited: fx.exited.then(({ at }) => at) };
}

function get(port) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(10000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
  });
}

// node:cluster loses this race now and then (about 1 run in 4 here): the
// worker tells the primary as it closes its server, that write to the dead
// primary fails with EPIPE, and the unhandled error kills the worker.
test('disconnect() then exit(): an in-flight request still completes', async () => {
  const p = start('slow-request');
  const { port, pids } = await p.report('port');
  const response = await get(port).catch((err) => ({ error: err.message }));
  assert.deepEqual(response, { status: 200, body: 'done' }, p.fx.stderr);
  // The primary left long before the answer.
  await p.exited;
  assert.deepEqual(await pollUntilGone(pids, 5000), [], 'the workers exit once done');
  assert.doesNotMatch(p.fx.stderr, /EPIPE|ERR_IPC/);
});

for (const [which, what] of [
  ['never-leaves', 'a worker asked to disconnect that never exits'],
  ['disconnects-itself', 'a worker that called worker.disconnect() itself and runs on'],
]) test(`${what} is killed killTimeout after the primary's exit, not before`, async () => {
  const p = start(which, { KILL_TIMEOUT: '3000' });
  const { pid } = await p.report('pid');
  const t0 = await p.exited;
  // The short grace of an abruptly dead primary (1 s) is long past...
  await sleep(Math.max(0, t0 + 1800 - Date.now()));
  assert.equal(isGone(pid), false, 'the leaving worker was killed before its killTimeout');
  // ...the killTimeout is not.
  assert.deepEqual(await pollUntilGone([pid], 6000), [], 'the worker is killed once its killTimeout is over');
  assert.ok(Date.now() - t0 >= 2500, `killed after ${Date.now() - t0} ms`);
});

test('the reaper exits with the primary when no worker is left', async () => {
  const p = start('idle');
  const { reaper } = await p.report('reaper');
  assert.equal(typeof reaper, 'number', 'the fixture found its reaper');
  const t0 = await p.exited;
  // It used to sleep out a one-second grace first.
  assert.deepEqual(await pollUntilGone([reaper], 500), [], 'the reaper outlived its primary');
  assert.ok(Date.now() - t0 < 700, `${Date.now() - t0} ms`);
});

test("the reaper does not show the primary's command line", async () => {
  const p = start('title');
  const { pid, reaper } = await p.report('pid');
  assert.equal(typeof reaper, 'number', 'the fixture found its reaper');
  const args = execFileSync('ps', ['-o', 'args=', '-p', String(reaper)], { encoding: 'utf8' }).trim();
  assert.equal(args, 'rcluster-reaper');
  assert.doesNotMatch(fs.readFileSync(`/proc/${reaper}/cmdline`, 'latin1'), /reaper-primary/);
  p.fx.kill();
  await p.exited;
  assert.deepEqual(await pollUntilGone([pid, reaper], 5000), []);
});

test('setupPrimary() checks killTimeout', () => {
  assert.throws(() => cluster.setupPrimary({ killTimeout: -1 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => cluster.setupPrimary({ killTimeout: '10s' }), { code: 'ERR_INVALID_ARG_TYPE' });
  // What a JS timer holds at most: the setting is also shutdown()'s and reload()'s timer.
  assert.throws(() => cluster.setupPrimary({ killTimeout: 2 ** 31 }), { code: 'ERR_OUT_OF_RANGE' });
  cluster.setupPrimary({ killTimeout: 5000 });
  assert.equal(cluster.settings.killTimeout, 5000);
});

test("shutdown() gives workers settings.killTimeout by default", async () => {
  const { killAll } = trackCluster(cluster);
  try {
    cluster.setupPrimary({ exec: fixture, args: ['never-leaves'], killTimeout: 300 });
    const w = cluster.fork({ REAPER_CASE: 'never-leaves' });
    await waitFor(w, 'message');
    const t0 = Date.now();
    await cluster.shutdown();
    assert.equal(w.process.signalCode, 'SIGKILL');
    assert.ok(Date.now() - t0 < 5000, `shutdown took ${Date.now() - t0} ms`);
  } finally {
    await killAll();
  }
});
