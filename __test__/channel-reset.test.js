'use strict';
// A worker that exits with the primary's messages unread resets the channel
// (ECONNRESET, POLLERR): its last frames and its end are still read and
// reported, by rcluster's JS-thread reader (src/uv_reader.rs) as by
// node:cluster, while other workers keep the primary busy.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { fixtureRunner } = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'channel-reset.js');
const run = fixtureRunner(FIXTURE, 40000);

test('a reset channel still delivers its last message and its disconnect', { timeout: 90000 }, async () => {
  // One after the other: the race each trial sets up needs a busy primary, not a busy machine.
  const node = await run('node', ['node'], process.env);
  const ours = await run('rcluster', [], process.env);
  // Both leave the worker in one go; 'disconnect' must not wait for a lull
  // in the other worker's traffic (the bound is generous for a busy machine).
  const prompt = (t) => ({ ...t, afterLastMs: t.afterLastMs !== null && t.afterLastMs < 500 });
  const everything = { last: true, exit: true, disconnect: true, afterLastMs: true };
  // One trial per ender of the fixture (ENDERS there).
  const expected = Array.from({ length: 6 }, () => everything);
  const why = (r) => `${JSON.stringify(r.trials)}\n${r.stderr}`;
  assert.deepEqual(node.trials.map(prompt), expected, `node:cluster baseline: ${why(node)}`);
  assert.deepEqual(ours.trials.map(prompt), expected, why(ours));
});
