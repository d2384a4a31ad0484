'use strict';
// Connections never get lost to the primary: queued connections of a killed
// worker are handed to the others, and a blocked primary does not delay
// hand-off. Each case runs its own primary (fixtures/) under each policy.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const { startFixture } = require('./helpers');

const fixture = (name) => path.join(__dirname, 'fixtures', name);

function startPrimary(name, policy) {
  return startFixture(fixture(name), { env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: policy } });
}

for (const policy of ['reuseport', 'none', 'rr']) {
  test(`${policy}: connections queued on a SIGKILLed worker are still answered`, async () => {
    // Rejects on the fixture's { error }.
    const result = await startPrimary('drain-primary.js', policy).result(20000);
    const answered = Object.entries(result.byWorker)
      .filter(([k]) => !k.startsWith('error'))
      .reduce((n, [, v]) => n + v, 0);
    assert.equal(answered, result.clients, JSON.stringify(result.byWorker));
    // Handed on at once, not when the departed worker's socket expires (2 s).
    assert.ok(result.afterKillMs < 1500, `answered ${result.afterKillMs} ms after the kill`);
  });
}

for (const policy of ['reuseport', 'rr']) {
  test(`${policy}: a blocked primary event loop does not block connections`, async () => {
    const fx = startPrimary('busy-primary.js', policy);
    const { port } = await fx.wait((m) => 'port' in m, 'its port', 20000);
    // Give the primary time to enter its 2 s block, then ask 5 times.
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    for (let i = 0; i < 5; i++) {
      const body = await new Promise((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, agent: false, timeout: 5000 }, (res) => {
          let b = '';
          res.on('data', (d) => { b += d; }).on('end', () => resolve(b));
        }).on('error', reject);
      });
      assert.equal(body, 'ok');
    }
    // Well inside the primary's 2 s block: hand-off did not wait for it.
    assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
  });
}
