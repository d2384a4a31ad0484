'use strict';
// Messages and handle passing between the rcluster primary and real Node
// workers, in both serializations, plus workers that write bad bytes on their
// channel. Every case runs in its own primary (fixtures/msg-fixture.js), under
// the default scheduling policy, and prints one JSON result line.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { fixtureRunner, runOnce, assertOk } = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'msg-fixture.js');
const FIXTURE_TIMEOUT_MS = 20000;

// Fixture primaries still running are killed in `after` whatever happened.
const runResult = fixtureRunner(FIXTURE, FIXTURE_TIMEOUT_MS);

function runFixture(scenario, serialization = 'json') {
  const env = { ...process.env };
  delete env.NODE_CLUSTER_SCHED_POLICY; // the default policy
  return runResult(`${scenario}/${serialization}`, [scenario, serialization], env);
}

function shared(scenario, serialization) {
  return runOnce(() => runFixture(scenario, serialization));
}

// ------------------------------------------------------------- round trip --

const roundtripJson = shared('roundtrip', 'json');
const roundtripAdvanced = shared('roundtrip', 'advanced');

test('json: plain values survive primary → worker and worker → primary', async () => {
  const r = await roundtripJson();
  assertOk(r);
  assert.equal(r.serialization, 'json');
  // Plain JSON values arrive unchanged both ways.
  assert.deepEqual(r.workerGot.slice(0, 5), r.sent.slice(0, 5));
  assert.deepEqual(r.echoes.slice(0, 5), r.sent.slice(0, 5));
  // Non-JSON values become what JSON.stringify makes of them, as in Node.
  const asJson = { date: '1970-01-01T00:00:00.000Z', buf: { type: 'Buffer', data: [104, 105] } };
  assert.deepEqual(r.workerGot[5], asJson);
  assert.deepEqual(r.echoes[5], asJson);
  assert.deepEqual(r.own, { type: 'own', from: 'worker', list: [1, 2], obj: { k: 'v' } });
});

test('advanced: Buffer, Map, Set, Date, BigInt, typed arrays and nesting survive both ways', async () => {
  const r = await roundtripAdvanced();
  assertOk(r);
  assert.equal(r.serialization, 'advanced');
  const rich = r.sent[5];
  // Make sure the sample really holds the rich types.
  assert.deepEqual(rich.buf, { $: 'Buffer', v: '6869' });
  assert.equal(rich.map.$, 'Map');
  assert.equal(rich.date.$, 'Date');
  assert.equal(rich.big.$, 'bigint');
  assert.deepEqual(r.workerGot, r.sent, 'as the worker received them');
  assert.deepEqual(r.echoes, r.sent, 'as the primary received them back');
  assert.deepEqual(r.own, {
    type: 'own',
    from: 'worker',
    buf: { $: 'Buffer', v: '00ff' },
    map: { $: 'Map', v: [['a', { $: 'bigint', v: '1' }]] },
    date: { $: 'Date', v: '1970-01-02T00:00:00.000Z' },
  });
});

for (const [mode, run] of [['json', roundtripJson], ['advanced', roundtripAdvanced]]) {
  test(`${mode}: send callback is called with null, asynchronously`, async () => {
    const r = await run();
    assertOk(r);
    assert.equal(r.callbacks.length, r.sent.length);
    for (const cb of r.callbacks) assert.deepEqual(cb, { err: null, async: true });
  });

  test(`${mode}: cluster 'message' is (worker, message, handle)`, async () => {
    const r = await run();
    assertOk(r);
    const echoes = r.clusterCalls.filter((c) => c.msg && c.msg.type === 'echo');
    assert.equal(echoes.length, r.sent.length);
    for (const c of r.clusterCalls) {
      assert.equal(c.argc, 3);
      assert.equal(c.firstArgIsWorker, true);
      assert.equal(c.sameWorker, true);
      assert.equal(c.handleUndefined, true);
    }
    echoes.forEach((c, i) => {
      assert.equal(c.msg.i, i);
      assert.deepEqual(c.msg.described, r.workerGot[i]);
    });
  });
}

// --------------------------------------------------------------- ordering --

for (const mode of ['json', 'advanced']) {
  test(`${mode}: 200 messages keep their order both ways`, async () => {
    const r = await runFixture('ordering', mode);
    assertOk(r);
    assert.deepEqual(
      {
        workerReceived: r.workerReceived, workerInOrder: r.workerInOrder, workerPadsOk: r.workerPadsOk,
        primaryReceived: r.primaryReceived, primaryInOrder: r.primaryInOrder,
      },
      { workerReceived: 200, workerInOrder: true, workerPadsOk: true, primaryReceived: 200, primaryInOrder: true });
  });
}

// ---------------------------------------------------------- closed channel --

test('send to a disconnected or dead worker: ERR_IPC_CHANNEL_CLOSED via callback, else via \'error\'', async () => {
  const r = await runFixture('closed');
  assertOk(r);
  for (const which of ['disconnected', 'dead']) {
    const c = r[which];
    assert.deepEqual(c, {
      connected: false,
      withCallback: { code: 'ERR_IPC_CHANNEL_CLOSED', async: true },
      withCallbackReturned: false,
      withoutCallbackReturned: false,
      errorEvents: ['ERR_IPC_CHANNEL_CLOSED'],
    }, which);
  }
  assert.deepEqual(r.warnings, []);
});

// ------------------------------------------------------ internal messages --

for (const mode of ['json', 'advanced']) {
  test(`${mode}: a worker message with cmd 'NODE_…' is not delivered as a user message`, async () => {
    const r = await runFixture('node-cmd', mode);
    assertOk(r);
    const expected = [
      { cmd: 'user', x: 2 },
      { type: 'user-with-node-text', text: 'NODE_something' },
      { type: 'done' },
      { type: 'pong' },
    ];
    assert.deepEqual(r.userMessages, expected);
    assert.deepEqual(r.clusterMessages, expected);
    assert.equal(r.alive, true);
  });
}

// --------------------------------------------------------- handle passing --

for (const mode of ['json', 'advanced']) {
  test(`${mode}: primary accepts a TCP connection and sends the socket; the worker replies through it`,
    async () => {
      const r = await runFixture('handle-to-worker', mode);
      assertOk(r);
      assert.deepEqual(r.worker, { type: 'got-socket', isSocket: true });
      assert.equal(r.reply, `w${r.workerId}:ping`);
      assert.deepEqual(r.sendResult, { err: null, async: true });
    });

  test(`${mode}: worker sends a net.Socket; the primary gets a usable socket in 'message'`, async () => {
    const r = await runFixture('handle-from-worker', mode);
    assertOk(r);
    assert.equal(r.isSocket, true, `handle was ${r.handleType}`);
    assert.equal(r.reply, 'echo:ping');
    assert.deepEqual(r.clusterEvent, { sameWorker: true, handleIsSocket: true });
    assert.equal(r.workerSendErr, null);
  });

  test(`${mode}: primary sends a listening net.Server; the worker accepts on it`, async () => {
    const r = await runFixture('server-to-worker', mode);
    assertOk(r);
    assert.deepEqual(r.worker, { type: 'got-server', isServer: true, listening: true });
    assert.deepEqual(r.sendResult, { err: null, async: true });
    assert.equal(r.reply, `w${r.workerId}:hello`);
  });
}

// -------------------------------------------------------------- bad input --

function assertBadWorkerContained(r, detail) {
  assertOk(r);
  assert.equal(r.badErrors.length, 1, `errors on the bad worker: ${JSON.stringify(r.badErrors)}`);
  assert.equal(r.badErrors[0].code, 'ERR_RCLUSTER_BAD_MESSAGE');
  assert.match(r.badErrors[0].message, detail);
  assert.ok(r.events.includes('disconnect:bad'), `events: ${r.events}`);
  assert.ok(r.events.some((e) => e.startsWith('exit:bad:')), `events: ${r.events}`);
  assert.ok(!r.events.some((e) => e.endsWith(':good') || e.includes(':good:')), `events: ${r.events}`);
  assert.deepEqual(r.goodErrors, []);
  assert.deepEqual(r.failures, [], 'the other worker serves');
  assert.deepEqual(r.served, { [`w${r.goodId}`]: 10 });
  assert.equal(r.goodAlive, true);
  assert.deepEqual(r.warnings, []);
  // The primary printed its result and exited on its own.
  assert.deepEqual(r.exit, { code: 0, signal: null });
}

test('json: a worker writing a garbage line is disconnected; primary and other workers carry on', async () => {
  const r = await runFixture('garbage', 'json');
  assertBadWorkerContained(r, /./);
  // Lines are judged one by one: the good line before the garbage (in the same
  // write) arrives, nothing after it does.
  assert.deepEqual(r.badMessages, ['before-garbage']);
});

test('advanced: a worker writing garbage bytes is disconnected; primary and other workers carry on', async () => {
  // A complete frame that is not a V8 serialization.
  const r = await runFixture('garbage', 'advanced');
  assertBadWorkerContained(r, /./);
});
