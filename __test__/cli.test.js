'use strict';
// The CLI clusters an app that knows nothing of clustering.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cpuCount } = require('../lib/cpus');
const { isGone } = require('./helpers');

const cli = path.join(__dirname, '..', 'bin', 'rcluster.js');
const app = path.join(__dirname, 'fixtures', 'cli-app.js');
const children = new Set();
const workerPids = new Set();

test.after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const pid of workerPids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Runs the CLI; `until(pattern, n)` resolves once stderr has n lines matching.
function runCli(args, env = {}) {
  const child = spawn(process.execPath, [cli, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  const waiters = [];
  child.stderr.on('data', (d) => {
    stderr += d;
    for (const m of stderr.matchAll(/pid (\d+)/g)) workerPids.add(Number(m[1]));
    for (const w of [...waiters]) w();
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  const until = (pattern, n = 1, ms = 15000) => new Promise((resolve, reject) => {
    const check = () => {
      const hits = stderr.split('\n').filter((l) => pattern.test(l));
      if (hits.length >= n) {
        waiters.splice(waiters.indexOf(check), 1);
        clearTimeout(timer);
        resolve(hits);
      }
    };
    const timer = setTimeout(() => {
      waiters.splice(waiters.indexOf(check), 1);
      reject(new Error(`timed out waiting for ${pattern} x${n}; stderr:\n${stderr}`));
    }, ms);
    waiters.push(check);
    check();
  });
  return { child, until, exited, stderr: () => stderr };
}

function get(port, urlPath = '/') {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; }).on('end', () => resolve(body));
    }).on('error', reject);
  });
}

test('runs N workers, reloads on SIGHUP, stops gracefully on SIGTERM', async () => {
  const port = await freePort();
  const run = runCli(['-i', '2', app], { PORT: String(port) });
  const first = await run.until(/listening on 127\.0\.0\.1:/, 2);
  const before = first.map((l) => Number(/pid (\d+)/.exec(l)[1]));
  assert.equal(new Set(before).size, 2);
  assert.ok(before.includes(Number(await get(port))));

  run.child.kill('SIGHUP');
  await run.until(/reload complete/);
  const after = (await run.until(/listening on/, 4)).slice(2).map((l) => Number(/pid (\d+)/.exec(l)[1]));
  for (const pid of after) assert.ok(!before.includes(pid), 'new workers after reload');
  assert.ok(after.includes(Number(await get(port))));

  run.child.kill('SIGTERM');
  const { code } = await run.exited;
  assert.equal(code, 0);
  for (const pid of [...before, ...after]) assert.equal(isGone(pid), true, `worker ${pid} gone`);
});

test('--restart replaces a crashed worker', async () => {
  const port = await freePort();
  const run = runCli(['-i', '1', '--restart', app], { PORT: String(port) });
  await run.until(/listening on/);
  await get(port, '/crash').catch(() => {});
  await run.until(/exited \(code 7\)/);
  await run.until(/restarting slot 0/);
  await run.until(/listening on/, 2);
  assert.match(await get(port), /^\d+$/);
  run.child.kill('SIGINT');
  assert.equal((await run.exited).code, 0);
});

test('without --restart the CLI exits 1 once its workers crashed', async () => {
  const port = await freePort();
  const run = runCli(['-i', '1', app], { PORT: String(port) });
  await run.until(/listening on/);
  await get(port, '/crash').catch(() => {});
  const { code } = await run.exited;
  assert.equal(code, 1);
});

test('bad options exit 2 with a message', async () => {
  for (const args of [['--bogus', app], ['-i', 'lots', app], ['--hang-timeout', '-1', app], []]) {
    const result = await new Promise((resolve) => {
      execFile(process.execPath, [cli, ...args], { timeout: 10000 }, (err, stdout, stderr) => {
        resolve({ code: err ? err.code : 0, stderr });
      });
    });
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /^rcluster: /);
  }
});

test('-i max honours the CPU quota and affinity', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-cpus-'));
  const v2 = path.join(dir, 'cpu.max');
  const paths = { v2, v1Quota: path.join(dir, 'nope'), v1Period: path.join(dir, 'nope') };
  fs.writeFileSync(v2, 'max 100000\n');
  assert.equal(cpuCount({ paths, affinity: 8 }), 8);
  fs.writeFileSync(v2, '150000 100000\n');
  assert.equal(cpuCount({ paths, affinity: 8 }), 2);
  fs.writeFileSync(v2, '50000 100000\n');
  assert.equal(cpuCount({ paths, affinity: 8 }), 1);
  fs.writeFileSync(v2, '800000 100000\n');
  assert.equal(cpuCount({ paths, affinity: 2 }), 2);
  fs.rmSync(dir, { recursive: true });
  assert.ok(cpuCount() >= 1);
});
