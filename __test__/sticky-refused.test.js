'use strict';
// When the kernel refuses a reuseport group's steering program (here: a
// seccomp filter, fixtures/refuse-cbpf.c, preloaded into the primary), the
// primary says so once per server with a process warning naming the errno and
// the fallback, for sticky: 'ip' and for the load-aware default alike; the
// server keeps serving. Without the filter, no warning.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { fixtureResult } = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'sticky-refused-primary.js');
const SOURCE = path.join(__dirname, 'fixtures', 'refuse-cbpf.c');
const SCHED_REUSEPORT = 3;
let dir;
let preload;

before(() => {
  // gcc is part of the test environment: if it is missing this fails.
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-refuse-cbpf-'));
  preload = path.join(dir, 'refuse-cbpf.so');
  execFileSync('gcc', ['-shared', '-fPIC', '-O2', '-Wall', '-Werror', '-o', preload, SOURCE], { stdio: 'pipe' });
});

after(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function run(mode, refused) {
  const env = { ...process.env, NODE_CLUSTER_SCHED_POLICY: 'reuseport' };
  delete env.LD_PRELOAD;
  if (refused) env.LD_PRELOAD = preload;
  return fixtureResult(FIXTURE, { args: [mode], env }, `${mode}${refused ? ' refused' : ''}`, 30000);
}

function assertServed(r) {
  assert.equal(r.policy, SCHED_REUSEPORT);
  assert.equal(r.served.length, 20);
  for (const body of r.served) assert.match(body, /^[12]$/, `served by a worker: ${JSON.stringify(r.served)}`);
}

const CASES = [
  ['sticky', 'RCLUSTER_STICKY_UNAVAILABLE', /sticky: 'ip' is not in effect there/],
  ['load', 'RCLUSTER_STEERING_UNAVAILABLE', /load-aware steering is not in effect there/],
];

for (const [mode, code, fallback] of CASES) {
  test(`${mode}: a refused steering program is one warning ${code} naming EPERM and the fallback`,
    { timeout: 60000 }, async () => {
      const r = await run(mode, true);
      assertServed(r);
      assert.equal(r.warnings.length, 1, `one warning for the server, two workers: ${JSON.stringify(r.warnings)}`);
      const [w] = r.warnings;
      assert.equal(w.name, 'Warning');
      assert.equal(w.code, code);
      assert.match(w.message, /\(EPERM\)/);
      assert.match(w.message, new RegExp(`port ${r.port}\\b`));
      assert.match(w.message, fallback);
      assert.match(w.message, /the kernel spreads connections by its own hash/);
    });

  test(`${mode}: without the filter, no warning`, { timeout: 60000 }, async () => {
    const r = await run(mode, false);
    assertServed(r);
    assert.deepEqual(r.warnings, []);
  });
}
