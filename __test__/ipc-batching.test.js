'use strict';
// Events reach JS in batches and sends may be written on the JS thread (see
// src/pump.rs, src/direct.rs): order, send callbacks, back-pressure, a
// throwing listener inside a batch, and liveness stay as in node:cluster.
// Each case runs in its own primary (fixtures/ipc-order.js), once with
// node:cluster for reference.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { fixtureRunner } = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'ipc-order.js');
const run = fixtureRunner(FIXTURE, 60000);

function both(scenario, serialization) {
  return Promise.all(['rcluster', 'node'].map((impl) =>
    run(`${scenario}/${serialization}/${impl}`, [scenario, serialization, impl], process.env)));
}

for (const serialization of ['json', 'advanced']) {
  test(`${serialization}: order, callbacks and back-pressure across direct and queued writes`,
    { timeout: 90000 }, async () => {
      const [ours, node] = await both('order', serialization);
      for (const r of [ours, node]) {
        assert.equal(r.ok, true, `${JSON.stringify(r.problems)}\nstderr: ${r.stderr}`);
        assert.equal(r.exit.code, 0, `the primary exits by itself once its worker is gone: ${r.stderr}`);
      }
      // Every echo and every message of the worker's burst, in order, though
      // one listener threw inside a batch.
      assert.deepEqual(
        { echoes: ours.echoes, burst: ours.burst, thrown: ours.thrown, sawBackPressure: ours.sawBackPressure },
        { echoes: node.echoes, burst: node.burst, thrown: node.thrown, sawBackPressure: node.sawBackPressure });
      // A send that is corked (made while a batch is delivered) still reports
      // the back-pressure of what is queued ahead of it.
      assert.equal(node.afterFalse, false, 'node:cluster baseline');
      assert.equal(ours.afterFalse, node.afterFalse);
    });
}

test('the primary stays alive while its worker lives, and exits by itself after', { timeout: 30000 }, async () => {
  const [ours, node] = await both('alive', 'json');
  for (const r of [ours, node]) {
    assert.equal(r.exit.code, 0, r.stderr);
    assert.ok(r.workerLivedMs >= 1400, `worker lived ${r.workerLivedMs} ms`);
    assert.ok(r.primaryLivedMs >= r.workerLivedMs, `primary left after ${r.primaryLivedMs} ms`);
    assert.ok(r.primaryLivedMs - r.workerLivedMs < 3000, `primary lingered ${r.primaryLivedMs - r.workerLivedMs} ms`);
  }
});

for (const scenario of ['interleaved', 'interleaved-blocked', 'texts']) {
  const title = {
    interleaved: 'a worker\'s cluster acts and messages reach JS in the order it sent them',
    'interleaved-blocked':
      'a worker\'s cluster acts and messages reach JS in order, also while the primary\'s JS is blocked',
    texts: 'a worker\'s messages alone (delivered directly): ASCII, UTF-8 and invalid UTF-8 decode as in node:cluster',
  }[scenario];
  test(title, { timeout: 60000 }, async () => {
    const [ours, node] = await both(scenario, 'json');
    // Texts as in the fixture (TEXTS), decoded: invalid bytes become U+FFFD.
    const texts = ['plain', 'caf\u00e9 \u65e5\u672c \u{1f389}', 'b\ufffd\ufffd(e'];
    const expected = [];
    for (let n = 0; n < 400; n++) {
      if (scenario !== 'texts') expected.push('L');
      expected.push(`M${n}:${texts[n % texts.length]}`);
    }
    assert.deepEqual(node.seen, expected, 'node:cluster baseline');
    assert.deepEqual(ours.seen, expected);
  });
}
