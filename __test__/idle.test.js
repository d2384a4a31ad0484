'use strict';
// An idle primary costs (almost) nothing: with 2 workers listening and no
// traffic, the core thread does not wake on a timer (it used to, ~100-200
// times a second: the stuck-JS watch and the queue watcher ticked every
// 10 ms). And after idling everything still works: requests, messages, and
// the core still reads for a blocked JS thread.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startFixture } = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'idle-primary.js');
const SAMPLE_MS = 2000;
// Generous for a noisy machine; a ticking watcher makes >= 100.
const MAX_WAKEUPS_PER_S = 20;

function coreThread(pid) {
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      if (fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === 'rcluster-core') return tid;
    } catch { /* the thread ended */ }
  }
  return null;
}

// Voluntary and involuntary context switches: every time it slept or was preempted.
function switches(pid, tid) {
  const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  const count = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)[1]);
  return count('voluntary_ctxt_switches') + count('nonvoluntary_ctxt_switches');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const cases = [
  ['reuseport (default)', {}],
  ['SCHED_RR', { NODE_CLUSTER_SCHED_POLICY: 'rr' }],
  ['SCHED_NONE', { NODE_CLUSTER_SCHED_POLICY: 'none' }],
  ['reuseport, restart: true', { IDLE_RESTART: '1' }],
];

for (const [name, env] of cases) {
  test(`${name}: an idle primary's core thread sleeps; after idling it serves, and reads for a blocked JS thread`,
    { timeout: 60000 }, async () => {
      const fx = startFixture(FIXTURE, { env: { ...process.env, ...env }, stdin: 'pipe' });
      try {
        await fx.wait((m) => m.idle, 'its workers listening', 30000);
        const tid = coreThread(fx.pid);
        assert.ok(tid, 'the primary has an rcluster-core thread');
        await sleep(1000);
        const before = switches(fx.pid, tid);
        await sleep(SAMPLE_MS);
        const perSecond = (switches(fx.pid, tid) - before) / (SAMPLE_MS / 1000);
        assert.ok(perSecond < MAX_WAKEUPS_PER_S, `the idle core thread woke ${perSecond} times a second`);

        fx.child.stdin.end('wake\n');
        const r = await fx.result(30000);
        // Both listens completed while the primary's JS was still blocked:
        // the core read their channels (the loop ends once both are seen).
        // (A new worker's start takes seconds on a busy machine: the block's limit is far.)
        assert.ok(r.relisten && r.newcomer, `listens seen during the block: ${JSON.stringify(r)}`);
        // An idle worker's channel (the relisten) is read for the blocked JS
        // thread within a few watch ticks, as before the watch could sleep.
        const relistenMs = r.relisten.listened - r.relisten.asked;
        assert.ok(relistenMs < 3000, `worker 1's listen took ${relistenMs} ms while the JS thread was blocked`);
        assert.deepEqual(r.seen, Array.from({ length: 20 }, (_, n) => n), 'messages sent during the block, in order');
        await fx.waitExit(15000);
      } finally {
        fx.kill();
      }
    });
}

test('the supervisor watchdog stops once no watched worker is left', { timeout: 60000 }, async () => {
  const fx = startFixture(path.join(__dirname, 'fixtures', 'idle-watchdog.js'));
  try {
    const m = await fx.wait((l) => l.gone, 'the watched worker stopped', 30000);
    assert.equal(m.restarted, 0, 'a stopped worker is not restarted');
    const tid = coreThread(fx.pid);
    // Its last tick (250 ms) may still come.
    await sleep(1000);
    const before = switches(fx.pid, tid);
    await sleep(SAMPLE_MS);
    const perSecond = (switches(fx.pid, tid) - before) / (SAMPLE_MS / 1000);
    // A watchdog left ticking wakes the core 4 times a second.
    assert.ok(perSecond < 2, `the core thread woke ${perSecond} times a second with nothing to watch`);
  } finally {
    fx.kill();
  }
});
