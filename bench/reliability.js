'use strict';
// Reliability figures for rcluster's supervision (issue #4), printed as a
// Markdown table. Not a test: it measures, with real processes on loopback.
//
//   node bench/reliability.js [--restarts 1000]
//
// 1. Kill storm: SIGKILL a random worker every 300 ms for 6 s under
//    one-connection-per-request load, restart on.
// 2. Three rolling reloads under the same load.
// 3. Primary SIGKILL: how long until every worker is gone.
// 4. Restart churn: N restarts; the primary's fd count and RSS.
const { spawn } = require('node:child_process');
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const primaryScript = path.join(__dirname, 'reliability-primary.js');
const argv = process.argv.slice(2);
const RESTARTS = Number(argv[argv.indexOf('--restarts') + 1]) || 1000;
const children = new Set();

function cleanup() {
  for (const c of children) c.kill('SIGKILL');
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

function startPrimary(env = {}, workers = 2) {
  const child = spawn(process.execPath, [primaryScript, String(workers)], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const queue = [];
  const waiting = [];
  readline.createInterface({ input: child.stdout }).on('line', (l) => {
    const msg = JSON.parse(l);
    if (waiting.length) waiting.shift()(msg);
    else queue.push(msg);
  });
  const next = (ms = 30000) => new Promise((resolve, reject) => {
    if (queue.length) return resolve(queue.shift());
    const t = setTimeout(() => reject(new Error('primary did not answer')), ms);
    waiting.push((m) => { clearTimeout(t); resolve(m); });
  });
  const ask = (cmd, ms) => {
    child.stdin.write(`${cmd}\n`);
    return next(ms);
  };
  return { child, next, ask };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Closed-loop load: `concurrency` clients, each one request per connection,
// until stop() (bounded by `maxMs` regardless).
function load(port, concurrency = 8, maxMs = 60000) {
  let running = true;
  const stats = { ok: 0, failed: 0 };
  const deadline = Date.now() + maxMs;
  const one = () => new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => { if (res.statusCode === 200) stats.ok++; else stats.failed++; resolve(); });
      res.on('error', () => { stats.failed++; resolve(); });
    });
    req.on('error', () => { stats.failed++; resolve(); });
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
  const client = async () => {
    while (running && Date.now() < deadline) await one();
  };
  const all = Promise.all(Array.from({ length: concurrency }, client));
  return { stats, stop: async () => { running = false; await all; return stats; } };
}

async function killStorm() {
  const p = startPrimary();
  const { port } = await p.next();
  await sleep(500);
  const before = await p.ask('health');
  const l = load(port);
  let kills = 0;
  let inflight = 0;
  const end = Date.now() + 6000;
  while (Date.now() < end) {
    await sleep(300);
    const k = await p.ask('kill');
    if (k.killed) {
      kills++;
      inflight += k.inflight;
    }
  }
  await sleep(1000);
  const s = await l.stop();
  await sleep(1500);
  const after = await p.ask('health');
  await p.ask('quit').catch(() => {});
  return {
    name: 'Kill storm (SIGKILL every 300 ms for 6 s, restart on)',
    figures: `${kills} kills; ${s.ok} ok, ${s.failed} failed (in flight on killed workers: ${inflight}); `
      + `slots back: ${after.slots.length}/${before.slots.length}; zombies: ${after.zombies}; `
      + `primary fds: ${before.fds} → ${after.fds}`,
    pass: after.slots.length === before.slots.length && after.zombies === 0 && after.fds <= before.fds
      && s.failed <= inflight,
  };
}

async function reloads() {
  const p = startPrimary();
  const { port } = await p.next();
  await sleep(500);
  const l = load(port);
  const times = [];
  for (let i = 0; i < 3; i++) {
    await sleep(500);
    times.push((await p.ask('reload', 60000)).reloaded);
  }
  await sleep(500);
  const s = await l.stop();
  await p.ask('quit').catch(() => {});
  return {
    name: 'Three rolling reloads under load',
    figures: `${s.ok} ok, ${s.failed} failed; reloads took ${times.join(', ')} ms`,
    pass: s.failed === 0,
  };
}

function gone(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^\d+ \(.*\) [ZX]/.test(stat); // exited, waiting to be reaped by init
  } catch {
    return true;
  }
}

async function primaryDeath() {
  const p = startPrimary({}, 4);
  await p.next();
  await sleep(800);
  const { pids } = await p.ask('health');
  const t0 = Date.now();
  p.child.kill('SIGKILL');
  let left = pids;
  while (left.length && Date.now() - t0 < 5000) {
    await sleep(10);
    left = left.filter((pid) => !gone(pid));
  }
  const ms = Date.now() - t0;
  return {
    name: 'Primary SIGKILL',
    figures: `${pids.length} workers; ${left.length} left after ${ms} ms`,
    pass: left.length === 0 && ms <= 2000,
  };
}

async function churn() {
  const p = startPrimary({ CRASH_AT_START: '1' }, 1);
  const samples = [];
  const t0 = Date.now();
  for (;;) {
    await sleep(250);
    const h = await p.ask('health');
    if (!samples.length || h.forks >= samples[samples.length - 1].forks + RESTARTS / 10) samples.push(h);
    if (h.forks > RESTARTS || Date.now() - t0 > 600000) {
      samples.push(h);
      break;
    }
  }
  p.child.kill('SIGKILL');
  const first = samples[1] || samples[0];
  const last = samples[samples.length - 1];
  const mb = (b) => (b / 1048576).toFixed(1);
  return {
    name: `Restart churn (${last.forks - 1} restarts)`,
    figures: `primary fds ${first.fds} (after ${first.forks - 1}) → ${last.fds}; `
      + `RSS ${mb(first.rss)} MB → ${mb(last.rss)} MB; zombies ${last.zombies}; ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    pass: last.fds <= first.fds + 2 && last.rss < first.rss * 1.25 + 8 * 1048576 && last.zombies <= 1,
  };
}

(async () => {
  const rows = [];
  const only = argv.includes("--only") ? argv[argv.indexOf("--only") + 1].split(",") : null;
  for (const f of [killStorm, reloads, primaryDeath, churn].filter((x) => !only || only.includes(x.name))) {
    const r = await f();
    rows.push(r);
    process.stderr.write(`${r.pass ? 'PASS' : 'FAIL'} ${r.name}: ${r.figures}\n`);
  }
  console.log('| scenario | figures | target met |');
  console.log('|---|---|---|');
  for (const r of rows) console.log(`| ${r.name} | ${r.figures} | ${r.pass ? 'yes' : 'no'} |`);
  // The figures README quotes, kept with the run's date and Node.
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const file = path.join(__dirname, 'results', `reliability-${stamp}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version,
    restarts: RESTARTS, only, rows }, null, 2)}\n`);
  process.stderr.write(`wrote ${path.relative(process.cwd(), file)}\n`);
  process.exitCode = rows.every((r) => r.pass) ? 0 : 1;
})().catch((err) => {
  console.error(err);
  process.exitCode = 1;
}).finally(cleanup);
