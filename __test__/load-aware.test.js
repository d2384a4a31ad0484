'use strict';
// The load-aware default (SCHED_REUSEPORT): a worker whose event loop is
// blocked is steered away from, what waits in its queue is answered by the
// other worker, it gets connections again once it runs, and nothing is lost.
// SCHED_NONE and SCHED_RR are not touched by it. Behaviour, not timing: the
// bounds below are fractions of a 3 s block.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startFixture } = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'load-aware-primary.js');

function run(policy, env = {}) {
  const fx = startFixture(FIXTURE, { env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: policy, ...env } });
  return fx.result(40000);
}

const count = (results) => {
  const by = {};
  for (const r of results) by[r.body] = (by[r.body] || 0) + 1;
  return by;
};

test('reuseport: a blocked worker is steered away from, its queue answered by the other, and back once it runs', async () => {
  const r = await run('reuseport');
  const by = JSON.stringify(count(r.results));
  assert.ok(r.unblockedAt >= r.blockMs - 100, `the block lasted ${r.unblockedAt} ms`);
  assert.ok(r.results.every((x) => x.body === '1' || x.body === '2'), `every request answered: ${by}`);
  const during = r.results.filter((x) => x.sent < r.unblockedAt - 200);
  assert.ok(during.length >= 20, `${during.length} requests during the block`);
  // The burst landed partly in the blocked worker's queue before anything
  // noticed; those were taken from it and answered too, well before its end.
  assert.ok(r.stalls >= 1 && r.stalledTaken >= 1, `stalls ${r.stalls}, taken ${r.stalledTaken}`);
  const late = during.filter((x) => x.body !== '2' || x.ms > r.blockMs / 3);
  assert.deepEqual(late, [], `answered by worker 2, each within a third of the block: ${by}`);
  const after = r.results.filter((x) => x.sent > r.unblockedAt + 200);
  assert.ok(after.some((x) => x.body === '1'), `worker 1 serves again after its block: ${JSON.stringify(count(after))}`);
});

// The probes the watcher writes are internal messages in the worker's own
// serialization: a worker that reads them after its block (V8 frames here)
// must take them for what they are and serve on.
test('reuseport, advanced serialization: the blocked worker reads its probes and serves again', async () => {
  const r = await run('reuseport', { SERIALIZATION: 'advanced', BLOCK_MS: '1500', AFTER_MS: '500' });
  const by = JSON.stringify(count(r.results));
  assert.ok(r.results.every((x) => x.body === '1' || x.body === '2'), `every request answered: ${by}`);
  assert.ok(r.stalls >= 1, `stalls ${r.stalls}`);
  const after = r.results.filter((x) => x.sent > r.unblockedAt + 200);
  assert.ok(after.some((x) => x.body === '1'), `worker 1 serves again after its block: ${JSON.stringify(count(after))}`);
});

// A worker the primary floods with messages has bytes unread on its channel
// at every look, but keeps reading them: it is busy, not stalled, and keeps
// its share of connections. (Counting unread bytes alone, it was steered away
// from for most of the flood: 3–10 of ~50 requests.)
test('reuseport: a worker flooded with messages that keeps reading is not taken for stalled', async () => {
  const r = await run('reuseport', { SCENARIO: 'flood' });
  const by = count(r.results);
  assert.ok(r.results.every((x) => x.body === '1' || x.body === '2'), `every request answered: ${JSON.stringify(by)}`);
  assert.ok(r.results.length >= 20, `${r.results.length} requests during the flood (${r.floodMs} ms)`);
  // Not `stalls === 0`: on a loaded machine a worker taken off the CPU for
  // a few ms is (rightly) steered away from now and then.
  assert.ok((by['1'] || 0) >= 0.3 * r.results.length,
    `the flooded worker keeps its share: ${JSON.stringify(by)}, stalls ${r.stalls}`);
});

test('reuseport: with every worker blocked, connections wait and are answered afterwards', async () => {
  const r = await run('reuseport', { BLOCKED: 'all', BLOCK_MS: '1500', AFTER_MS: '300' });
  const by = JSON.stringify(count(r.results));
  assert.ok(r.results.every((x) => x.body === '1' || x.body === '2'), `none lost: ${by}`);
  const burst = r.results.slice(0, 20);
  // Nobody could answer them before a block ended.
  assert.ok(burst.every((x) => x.sent + x.ms >= 1000), `the burst waited: ${JSON.stringify(burst)}`);
});

test('reuseport: a blocked worker killed while its queue is being taken loses nothing', async () => {
  const r = await run('reuseport', { SCENARIO: 'kill', BURST: '40', KILL_AFTER_MS: '150' });
  const by = count(r.results);
  assert.deepEqual(by, { 2: 40 }, JSON.stringify(by));
});

for (const policy of ['none', 'rr']) {
  test(`${policy}: untouched by the queue watcher; a blocked worker loses nothing`, async () => {
    const r = await run(policy, { BLOCK_MS: '1500', AFTER_MS: '300' });
    const by = JSON.stringify(count(r.results));
    assert.ok(r.results.every((x) => x.body === '1' || x.body === '2'), `every request answered: ${by}`);
    assert.equal(r.stalls, 0);
    assert.equal(r.stalledTaken, 0);
  });
}
