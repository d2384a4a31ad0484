'use strict';
// rcluster required in a worker thread is node:cluster, with a warning (its
// core serves the main thread only): forking from the thread works, and the
// thread ending while its worker still talks does not take the process down.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startFixture } = require('./helpers');

test('in a worker thread: node:cluster with a warning; the thread can end with its worker alive', async () => {
  const fx = startFixture(path.join(__dirname, 'fixtures', 'thread-primary.js'), { env: process.env });
  const result = await fx.result(20000);
  const exit = await fx.waitExit(20000);
  assert.equal(result.nodeCluster, true);
  assert.ok(result.warnings.includes('RCLUSTER_FALLBACK'), JSON.stringify(result.warnings));
  assert.deepEqual(exit, { code: 0, signal: null }, fx.stderr);
});
