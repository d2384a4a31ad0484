'use strict';
// cluster.fork() and what follows it: fork → online → listening, the
// `cluster.workers` bookkeeping, `setup` and `cluster.settings`, the
// ChildProcess-like `worker.process`, silent stdio, env, and what a worker
// sees of the cluster.
//
// RCLUSTER_TEST_IMPL=node:cluster runs this file against Node's own cluster.

const { test, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Readable } = require('node:stream');
const { waitFor, waitForMessage, trackCluster, startFixture, killFixtures } = require('./helpers');

const cluster = require(process.env.RCLUSTER_TEST_IMPL || '..');

const FIXTURE = path.join(__dirname, 'fixtures', 'cluster-app.js');
const TEST_TIMEOUT = 15000;

// Every worker forked in this process, so cleanup reaches even those already
// dropped from cluster.workers; fixture primaries and theirs too.
const { killAll } = trackCluster(cluster);
afterEach(killAll);
afterEach(killFixtures);
after(killAll);

// Reads `stream` until its text includes `marker`.
function readUntil(stream, marker, ms = 10000) {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      stream.removeListener('data', onData);
      reject(new Error(`timed out after ${ms} ms waiting for ${JSON.stringify(marker)}; got ${JSON.stringify(text)}`));
    }, ms);
    function onData(chunk) {
      text += chunk;
      if (text.includes(marker)) {
        clearTimeout(timer);
        stream.removeListener('data', onData);
        resolve(text);
      }
    }
    stream.setEncoding('utf8');
    stream.on('data', onData);
  });
}

// Runs the fixture as a separate primary; resolves with its result and exit.
async function runPrimary(args, { execArgv = [], ms = 10000 } = {}) {
  const fx = startFixture(FIXTURE, { args, execArgv });
  try {
    const result = await fx.result(ms);
    return { ...(await fx.waitExit(ms)), result, stderr: fx.stderr };
  } catch (e) {
    fx.kill();
    throw new Error(`primary ${args.join(' ')}: ${e.message}`);
  }
}

function setup(options = {}) {
  cluster.setupPrimary({ exec: FIXTURE, args: [], execArgv: [], silent: false, ...options });
}

test('cluster.isPrimary / isMaster / isWorker in the primary', () => {
  assert.equal(cluster.isPrimary, true);
  assert.equal(cluster.isMaster, true);
  assert.equal(cluster.isWorker, false);
  assert.equal(cluster.worker, undefined);
  assert.equal(typeof cluster.fork, 'function');
  assert.equal(typeof cluster.workers, 'object');
});

test('setupPrimary() defaults cluster.settings from the primary\'s argv and execArgv', { timeout: TEST_TIMEOUT }, async () => {
  const { code, signal, result: out, stderr } = await runPrimary(['settings', 'extra-arg'], {
    execArgv: ['--no-warnings'],
  });
  assert.equal(code, 0, `primary failed: ${stderr}`);
  assert.equal(signal, null);

  const expected = {
    args: ['settings', 'extra-arg'],
    exec: FIXTURE,
    execArgv: ['--no-warnings'],
    silent: false,
  };
  assert.deepEqual(out.before, {});
  assert.deepEqual(out.settings, expected);
  assert.deepEqual(out.setupArg, expected);
  assert.equal(out.setupArgIsSettings, true);

  // fork() with default settings runs exec with execArgv and args.
  assert.equal(out.spawnfile, process.execPath);
  assert.deepEqual(out.spawnargs, [process.execPath, '--no-warnings', FIXTURE, 'settings', 'extra-arg']);
  assert.deepEqual(out.report.argv, ['settings', 'extra-arg']);
  assert.deepEqual(out.report.execArgv, ['--no-warnings']);
});

test('setupPrimary(options) emits setup with the merged settings', { timeout: TEST_TIMEOUT }, async () => {
  const setupEvent = waitFor(cluster, 'setup');
  let sync = true;
  cluster.once('setup', () => assert.equal(sync, false, "'setup' must be emitted asynchronously"));
  cluster.setupPrimary({ exec: FIXTURE, args: ['a', 'b'], execArgv: [], silent: false });
  sync = false;
  const [settings] = await setupEvent;
  assert.deepEqual(settings, { args: ['a', 'b'], exec: FIXTURE, execArgv: [], silent: false });
  assert.deepEqual(cluster.settings, settings);

  // Later calls merge into what is already set.
  const second = waitFor(cluster, 'setup');
  cluster.setupPrimary({ args: [] });
  const [merged] = await second;
  assert.deepEqual(merged, { args: [], exec: FIXTURE, execArgv: [], silent: false });
  assert.deepEqual(cluster.settings, merged);
});

test('fork → online → listening, with Node\'s address object', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const clusterEvents = [];
  const workerEvents = [];
  const onFork = (w) => clusterEvents.push(['fork', w]);
  const onOnline = (w) => clusterEvents.push(['online', w]);
  const onListening = (w, address) => clusterEvents.push(['listening', w, address]);
  cluster.on('fork', onFork);
  cluster.on('online', onOnline);
  cluster.on('listening', onListening);
  try {
    const worker = cluster.fork({ RC_MODE: 'listen' });
    assert.equal(cluster.workers[worker.id], worker, 'a forked worker is in cluster.workers at once');
    worker.on('online', () => workerEvents.push('online'));
    worker.on('listening', () => workerEvents.push('listening'));

    const reported = waitForMessage(worker, 'listening');
    const [address] = await waitFor(worker, 'listening');
    const { address: serverAddress } = await reported;

    assert.deepEqual(clusterEvents.map((e) => e[0]), ['fork', 'online', 'listening']);
    for (const e of clusterEvents) assert.equal(e[1], worker);
    assert.deepEqual(workerEvents, ['online', 'listening']);

    assert.deepEqual(address, {
      addressType: 4,
      address: '127.0.0.1',
      port: serverAddress.port,
      fd: undefined,
    });
    assert.ok(Number.isInteger(address.port) && address.port > 0, `port ${address.port}`);
    assert.deepEqual(clusterEvents[2][2], address);
    assert.equal(worker.state, 'listening');
    assert.equal(cluster.workers[worker.id], worker);
  } finally {
    cluster.off('fork', onFork);
    cluster.off('online', onOnline);
    cluster.off('listening', onListening);
  }
});

test('worker ids increment; cluster.workers holds live workers and drops them after exit and disconnect', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const a = cluster.fork({ RC_MODE: 'idle' });
  const b = cluster.fork({ RC_MODE: 'idle' });
  assert.ok(Number.isInteger(a.id) && a.id > 0);
  assert.equal(b.id, a.id + 1);
  await Promise.all([waitFor(a, 'online'), waitFor(b, 'online')]);
  assert.equal(cluster.workers[a.id], a);
  assert.equal(cluster.workers[b.id], b);

  const aGone = Promise.all([waitFor(a, 'exit'), waitFor(a, 'disconnect')]);
  a.process.kill('SIGKILL');
  await aGone;
  assert.equal(a.id in cluster.workers, false, 'exited and disconnected worker is dropped');
  assert.equal(cluster.workers[b.id], b, 'other worker is untouched');

  const c = cluster.fork({ RC_MODE: 'idle' });
  assert.equal(c.id, b.id + 1, 'ids are never reused');
  await waitFor(c, 'online');

  const rest = Promise.all([waitFor(b, 'exit'), waitFor(b, 'disconnect'), waitFor(c, 'exit'), waitFor(c, 'disconnect')]);
  b.process.kill('SIGKILL');
  c.process.kill('SIGKILL');
  await rest;
  assert.equal(b.id in cluster.workers, false);
  assert.equal(c.id in cluster.workers, false);
});

test('worker.process: live pid, spawnfile, spawnargs, no stdio when not silent', { timeout: TEST_TIMEOUT }, async () => {
  setup({ args: ['--flag', 'value'], execArgv: ['--no-warnings'] });
  const worker = cluster.fork({ RC_MODE: 'report' });
  const report = await waitForMessage(worker, 'report');
  const proc = worker.process;

  assert.ok(Number.isInteger(proc.pid) && proc.pid > 0, `pid ${proc.pid}`);
  assert.equal(proc.pid, report.pid);
  assert.equal(process.kill(proc.pid, 0), true, 'worker pid is a live process');
  assert.equal(proc.spawnfile, process.execPath);
  assert.deepEqual(proc.spawnargs, [process.execPath, '--no-warnings', FIXTURE, '--flag', 'value']);
  assert.deepEqual(report.argv, ['--flag', 'value']);
  assert.deepEqual(report.execArgv, ['--no-warnings']);
  assert.equal(proc.exitCode, null);
  assert.equal(proc.signalCode, null);
  assert.equal(proc.connected, true);
  assert.equal(proc.killed, false);
  assert.equal(proc.stdin, null);
  assert.equal(proc.stdout, null);
  assert.equal(proc.stderr, null);
});

test('silent: true gives readable stdout/stderr carrying what the worker prints', { timeout: TEST_TIMEOUT }, async () => {
  setup({ silent: true });
  try {
    const worker = cluster.fork({ RC_MODE: 'print' });
    const { stdout, stderr } = worker.process;
    assert.ok(stdout instanceof Readable, 'worker.process.stdout is a Readable');
    assert.ok(stderr instanceof Readable, 'worker.process.stderr is a Readable');
    const [out, err] = await Promise.all([
      readUntil(stdout, 'rc-stdout-marker'),
      readUntil(stderr, 'rc-stderr-marker'),
    ]);
    assert.match(out, /rc-stdout-marker\n/);
    assert.doesNotMatch(out, /rc-stderr-marker/);
    assert.match(err, /rc-stderr-marker\n/);
    assert.doesNotMatch(err, /rc-stdout-marker/);
  } finally {
    setup({ silent: false });
  }
});

test('fork(env) reaches the worker; the worker sees cluster.worker and node:cluster', { timeout: TEST_TIMEOUT }, async () => {
  setup();
  const worker = cluster.fork({ RC_MODE: 'report', RC_FOO: 'bar baz' });
  const report = await waitForMessage(worker, 'report');
  assert.equal(report.foo, 'bar baz');
  assert.equal(report.isWorker, true);
  assert.equal(report.isPrimary, false);
  assert.equal(report.isMaster, false);
  assert.equal(report.workerId, worker.id, 'cluster.worker.id in the worker is the primary\'s worker.id');
  assert.equal(report.rclusterIsNodeCluster, true, "require('rcluster') in a worker is node:cluster");

  // env given to fork() is for that worker only.
  const other = cluster.fork({ RC_MODE: 'report' });
  const otherReport = await waitForMessage(other, 'report');
  assert.equal(otherReport.foo, null);
  assert.equal(otherReport.workerId, other.id);
});
