'use strict';
// Bad input gets the same error class and code as node:cluster gives, and
// never brings the primary down. Each case runs in a fresh primary, once with
// node:cluster and once with rcluster, and the outcomes are compared.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { fixtureResult } = require('./helpers');

const fixture = path.join(__dirname, 'fixtures', 'errors-primary.js');

// A fresh primary per case and module.
const resultOf = (file, caseName, module) =>
  fixtureResult(file, { args: [caseName], env: { ...process.env, CLUSTER_MODULE: module } }, `${module} ${caseName}`);

const run = (caseName, module) => resultOf(fixture, caseName, module);

const cases = [
  ['exec-not-string', 'ERR_INVALID_ARG_TYPE'],
  ['args-not-array', 'ERR_INVALID_ARG_TYPE'],
  ['serialization-bad', 'ERR_INVALID_ARG_VALUE'],
  ['stdio-without-ipc', 'ERR_CHILD_PROCESS_IPC_REQUIRED'],
  ['uid-not-number', 'ERR_INVALID_ARG_TYPE'],
  ['gid-fraction', 'ERR_INVALID_ARG_TYPE'],
  ['inspect-port-null', 'ERR_SOCKET_BAD_PORT'],
  ['inspect-port-range', 'ERR_SOCKET_BAD_PORT'],
  ['send-missing', 'ERR_MISSING_ARGS'],
  ['send-symbol', 'ERR_INVALID_ARG_TYPE'],
  ['send-bad-handle', 'ERR_INVALID_HANDLE_TYPE'],
  ['send-bad-options', 'ERR_INVALID_ARG_TYPE'],
  ['kill-unknown-signal', 'ERR_UNKNOWN_SIGNAL'],
  ['disconnect-twice', 'ERR_IPC_DISCONNECTED'],
  ['send-after-disconnect', 'ERR_IPC_CHANNEL_CLOSED'],
  ['spawn-bad-cwd', 'ENOENT'],
];

for (const [name, code] of cases) {
  test(`${name} → ${code}, as node:cluster`, async () => {
    const [ours, node] = await Promise.all([run(name, 'rcluster'), run(name, 'node')]);
    assert.equal(node.code, code, `node:cluster itself gave ${JSON.stringify(node)}`);
    assert.deepEqual(ours, node);
  });
}

// Workers that cannot be started (fixtures/spawn-primary.js): what node:cluster
// throws or emits, and in which order, rcluster does too.
const spawnFixture = path.join(__dirname, 'fixtures', 'spawn-primary.js');

const runSpawnCase = (caseName, module) => resultOf(spawnFixture, caseName, module);

async function bothSpawnCase(caseName) {
  const [ours, node] = await Promise.all([runSpawnCase(caseName, 'rcluster'), runSpawnCase(caseName, 'node')]);
  assert.equal(node.error, undefined, `node:cluster baseline: ${JSON.stringify(node)}`);
  return { ours, node };
}

test("a started worker emits 'spawn' before 'fork', and 'close' even when nobody reads its output", async () => {
  const { ours, node } = await bothSpawnCase('silent-close');
  assert.equal(node.closed, true, 'node:cluster baseline');
  assert.ok(node.steps.indexOf('process spawn') < node.steps.indexOf('cluster fork'), 'node:cluster baseline');
  assert.deepEqual(ours, node);
});

test("a cwd that does not exist: 'error', then 'close' (-2) and 'disconnect'; the worker is forgotten", async () => {
  const { ours, node } = await bothSpawnCase('bad-cwd');
  const steps = node.trace.map((t) => `${t.on} ${t.ev || ''}`.trim());
  assert.deepEqual(steps, ['fork()', 'worker error', 'process error', 'cluster fork', 'process close',
    'worker disconnect', 'cluster disconnect', 'process disconnect', 'later'], 'node:cluster baseline');
  assert.equal(node.disconnectCallback, true);
  assert.deepEqual(ours, node);
});

test('a missing exec file is no spawn failure: the worker starts, exits with code 1, and is forgotten', async () => {
  const { ours, node } = await bothSpawnCase('missing-exec');
  assert.ok(node.trace.some((t) => t.on === 'worker' && t.ev === 'exit' && t.args[0] === 1), 'node:cluster baseline');
  // pids differ
  const strip = (r) => r.trace.map(({ pid, ...rest }) => ({ ...rest, hadPid: typeof pid === 'number' || undefined }));
  assert.deepEqual(strip(ours), strip(node));
  assert.deepEqual(ours.workers, []);
});

test('fork() throws the spawn errors Node throws: ENOTDIR for a cwd that is a file', async () => {
  const { ours, node } = await bothSpawnCase('enotdir');
  assert.equal(node.code, 'ENOTDIR', JSON.stringify(node));
  assert.equal(node.syscall, 'spawn');
  assert.deepEqual(ours, node);
});

test('fork() throws EPERM in a primary that may not take the uid/gid it asks for', async () => {
  const { ours, node } = await bothSpawnCase('uid-eperm');
  assert.equal(node.code, 'EPERM', JSON.stringify(node));
  assert.notEqual(node.uid, 0, 'the fixture primary runs as non-root');
  assert.deepEqual(ours, node);
});

for (const name of ['exec-buffer', 'exec-url']) {
  test(`setupPrimary({ exec }) takes a ${name === 'exec-url' ? 'file: URL' : 'Buffer'}, as node:cluster`, async () => {
    const { ours, node } = await bothSpawnCase(name);
    assert.equal(node.argv[0], spawnFixture, JSON.stringify(node));
    assert.deepEqual(ours, node);
  });
}

for (const name of ['exec-number', 'exec-object', 'exec-buffer-nul']) {
  test(`${name}: fork() throws node:cluster's error class, code and message`, async () => {
    const { ours, node } = await bothSpawnCase(name);
    assert.equal(node.threw, true, JSON.stringify(node));
    assert.deepEqual(ours, node);
  });
}
