'use strict';
// Large messages on a worker channel, in both serializations: with a handle
// (many short-lived workers, to catch a race) and ~100 MB ones both ways.
// Every case runs in its own primary (fixtures/large-fixture.js).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { fixtureRunner, assertOk } = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'large-fixture.js');
const FIXTURE_TIMEOUT_MS = 60000;

const runResult = fixtureRunner(FIXTURE, FIXTURE_TIMEOUT_MS);

function runFixture(scenario, serialization) {
  return runResult(`${scenario}/${serialization}`, [scenario, serialization], { ...process.env });
}

for (const mode of ['json', 'advanced']) {
  test(`${mode}: a large message with a socket, answered by a worker that unrefs its channel, always arrives`,
    async () => {
      const r = await runFixture('handle-race', mode);
      assertOk(r);
      assert.deepEqual(r.failures, []);
      assert.equal(r.delivered, r.rounds);
    });

  test(`${mode}: a ~100 MB message arrives intact, primary → worker and worker → primary`, async () => {
    const r = await runFixture('large', mode);
    assertOk(r);
    assert.ok(r.downSummary.length > 50e6, `payload of ${r.downSummary.length}`);
    assert.deepEqual(r.workerGot, r.downSummary, 'as the worker received it');
    assert.equal(r.sendErr, null);
    assert.deepEqual(r.primaryGot, r.upSummary, 'as the primary received it');
    assert.deepEqual(r.errors, []);
    assert.equal(r.connected, true);
  });
}
