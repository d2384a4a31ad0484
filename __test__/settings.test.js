'use strict';
// setupPrimary settings reach the worker as node:cluster would pass them.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const os = require('node:os');
const fs = require('node:fs');
const { once } = require('node:events');
const { spawnSync } = require('node:child_process');
const { fixtureResult } = require('./helpers');
const cluster = require('..');

const exec = path.join(__dirname, 'fixtures', 'settings-worker.js');

function withTimeout(promise, ms = 10000, what = 'event') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function report(worker) {
  const [msg] = await withTimeout(once(worker, 'message'), 10000, 'worker report');
  return msg;
}

async function finish(worker) {
  if (worker.isDead()) return;
  const exited = once(worker, 'exit');
  worker.process.kill('SIGKILL');
  await withTimeout(exited, 10000, 'exit');
}

test.afterEach(() => {
  for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
});

test('defaults come from the primary and setup is emitted', async () => {
  const setup = once(cluster, 'setup');
  cluster.setupPrimary({ exec });
  const [settings] = await withTimeout(setup);
  assert.equal(settings.exec, exec);
  assert.deepEqual(settings.args, process.argv.slice(2));
  assert.deepEqual(settings.execArgv, process.execArgv);
  assert.equal(settings.silent, false);
  assert.equal(cluster.settings, settings);
});

test('exec, args, execArgv, cwd and env reach the worker', async () => {
  const cwd = fs.realpathSync(os.tmpdir());
  cluster.setupPrimary({ exec, args: ['one', 'two'], execArgv: ['--no-warnings'], cwd });
  const w = cluster.fork({ RCLUSTER_TEST_VALUE: 'from-fork' });
  const r = await report(w);
  assert.deepEqual(r.argv, ['one', 'two']);
  assert.deepEqual(r.execArgv, ['--no-warnings']);
  assert.equal(r.cwd, cwd);
  assert.equal(r.env, 'from-fork');
  assert.equal(r.isWorker, true);
  assert.equal(r.uniqueIdLeaked, false);
  assert.equal(w.process.spawnfile, process.execPath);
  assert.deepEqual(w.process.spawnargs, [process.execPath, '--no-warnings', exec, 'one', 'two']);
  await finish(w);
});

test('settings merge across setupPrimary calls', () => {
  cluster.setupPrimary({ exec, args: ['a'] });
  cluster.setupPrimary({ silent: true });
  assert.equal(cluster.settings.exec, exec);
  assert.deepEqual(cluster.settings.args, ['a']);
  assert.equal(cluster.settings.silent, true);
  cluster.setupPrimary({ silent: false, args: [] });
});

test('stdio array: piped stdout, ignored stdin', async () => {
  cluster.setupPrimary({ exec, args: [], stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const w = cluster.fork();
  assert.equal(w.process.stdin, null);
  assert.ok(w.process.stdout, 'stdout is a stream');
  assert.equal(w.process.stderr, null);
  await report(w);
  const done = once(w.process, 'close');
  w.send('bye');
  await withTimeout(done, 10000, 'close');
  cluster.setupPrimary({ stdio: undefined });
});

test('uid and gid are applied', async () => {
  const uid = process.getuid();
  cluster.setupPrimary({ exec, uid, gid: process.getgid() });
  const w = cluster.fork();
  const r = await report(w);
  assert.equal(r.uid, uid);
  await finish(w);
  cluster.setupPrimary({ uid: undefined, gid: undefined });
});

// A primary of its own (fixtures/spawn-primary.js, with root's extra groups
// when run as root) per module, so the two can be compared.
function runGroupsCase(caseName, module) {
  return fixtureResult(path.join(__dirname, 'fixtures', 'spawn-primary.js'), {
    args: [caseName],
    env: { ...process.env, CLUSTER_MODULE: module },
  }, `${module} ${caseName}`);
}

for (const [name, what] of [['groups-gid', 'gid'], ['groups-uid-gid', 'uid and gid']]) {
  test(`with ${what} set, the worker keeps none of the primary's supplementary groups, as with node:cluster`, async () => {
    const [ours, node] = await Promise.all([runGroupsCase(name, 'rcluster'), runGroupsCase(name, 'node')]);
    if (process.getuid() === 0) {
      assert.deepEqual(node.groups, [65534], `node:cluster baseline: ${JSON.stringify(node)}`);
      assert.equal(node.gid, 65534);
      assert.deepEqual(ours.groups, [65534], `rcluster: ${JSON.stringify(ours)}`);
    }
    assert.deepEqual(ours, node);
  });
}

test('advanced serialization carries Maps and Buffers both ways', async () => {
  cluster.setupPrimary({ exec, serialization: 'advanced' });
  const w = cluster.fork();
  await report(w);
  w.send('echo-map');
  const [m] = await withTimeout(once(w, 'message'));
  assert.ok(m instanceof Map);
  assert.ok(Buffer.isBuffer(m.get('a')) || m.get('a') instanceof Uint8Array);
  assert.equal(Buffer.from(m.get('a')).toString(), 'hi');
  await finish(w);
  cluster.setupPrimary({ serialization: 'json' });
});

test('--inspect gives each worker its own inspector port', async () => {
  cluster.setupPrimary({ exec, silent: true, execArgv: ['--inspect=127.0.0.1:0'] });
  const a = cluster.fork();
  const b = cluster.fork();
  // Listen to both before awaiting either: b may report first.
  const reports = await Promise.all([a, b].map(report));
  const ports = reports.map((r) => r.execArgv.find((x) => x.startsWith('--inspect-port=')));
  // As in Node: the primary's debug port plus one per worker.
  assert.deepEqual(ports, [`--inspect-port=${process.debugPort + 1}`, `--inspect-port=${process.debugPort + 2}`]);
  await Promise.all([finish(a), finish(b)]);

  let calls = 0;
  cluster.setupPrimary({ inspectPort: () => { calls++; return 0; } });
  const c = cluster.fork();
  const r = await report(c);
  assert.ok(r.execArgv.includes('--inspect-port=0'));
  assert.equal(calls, 1);
  await finish(c);
  cluster.setupPrimary({ execArgv: [], inspectPort: undefined, silent: false });
});

test('schedulingPolicy is frozen at the first setupPrimary', () => {
  const frozen = cluster.schedulingPolicy;
  assert.ok([cluster.SCHED_NONE, cluster.SCHED_RR, cluster.SCHED_REUSEPORT].includes(frozen));
  assert.equal(cluster.SCHED_NONE, 1);
  assert.equal(cluster.SCHED_RR, 2);
  assert.equal(cluster.SCHED_REUSEPORT, 3);
});

test('a bad schedulingPolicy fails setupPrimary before anything changes, and every call after it', () => {
  const script = `
    const cluster = require(${JSON.stringify(path.join(__dirname, '..'))});
    cluster.schedulingPolicy = 42;
    const out = {};
    const before = cluster.settings;
    try { cluster.setupPrimary({ exec: 'x.js', metrics: { port: 0 } }); } catch (e) { out.first = e.code; }
    out.metrics = cluster.metricsAddress();
    out.settingsKept = cluster.settings === before;
    try { cluster.setupPrimary(); } catch (e) { out.second = e.code; }
    try { cluster.fork(); } catch (e) { out.fork = e.code; }
    console.log(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    first: 'ERR_INVALID_ARG_VALUE', metrics: null, settingsKept: true,
    second: 'ERR_INVALID_ARG_VALUE', fork: 'ERR_INVALID_ARG_VALUE',
  });
});

test('mirrorToNodeCluster: node:cluster lists the workers rcluster lists, also while one is disconnecting', () => {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'mirror-primary.js')],
    { encoding: 'utf8', timeout: 15000 });
  assert.equal(r.status, 0, r.stderr);
  const both = (v) => ({ rcluster: v, node: v });
  assert.deepEqual(JSON.parse(r.stdout), { online: both(true), disconnecting: both(false), exit: both(false) });
});

test('policy defaults: env names, platform', () => {
  const pick = cluster._defaultPolicy;
  assert.equal(pick({ NODE_CLUSTER_SCHED_POLICY: 'rr' }, 'linux'), cluster.SCHED_RR);
  assert.equal(pick({ NODE_CLUSTER_SCHED_POLICY: 'none' }, 'linux'), cluster.SCHED_NONE);
  assert.equal(pick({ NODE_CLUSTER_SCHED_POLICY: 'reuseport' }, 'darwin'), cluster.SCHED_REUSEPORT);
  assert.equal(pick({}, 'linux'), cluster.SCHED_REUSEPORT);
  assert.equal(pick({}, 'darwin'), cluster.SCHED_RR);
});

test('platforms: Windows falls back to node:cluster, workers get Node\'s cluster', () => {
  const { select } = require('../lib/select');
  assert.equal(select({ platform: 'linux', isWorker: false }), 'primary');
  assert.equal(select({ platform: 'darwin', isWorker: false }), 'primary');
  assert.equal(select({ platform: 'win32', isWorker: false }), 'node-fallback');
  assert.equal(select({ platform: 'linux', isWorker: true }), 'worker');
  assert.equal(select({ platform: 'linux', isWorker: false, isMainThread: false }), 'thread-fallback');
  assert.equal(select({ platform: 'linux', isWorker: true, isMainThread: false }), 'worker');
});
