'use strict';
// What an idle primary costs: wake-ups a second of each of its threads, with
// 2 workers listening on an HTTP server and no traffic, for rcluster under
// each policy (and with supervision) and for node:cluster. Not a test: it
// measures, and keeps a table in bench/results/idle-<time>.json.
//
//   node bench/idle.js [--seconds 5]
//
// A thread's wake-ups are its voluntary and involuntary context switches
// (/proc/<pid>/task/<tid>/status) over the window, which starts 1 s after both
// workers listen. The primary is __test__/fixtures/idle-primary.js.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const argv = process.argv.slice(2);
const SECONDS = Number(argv[argv.indexOf('--seconds') + 1]) || 5;
const FIXTURE = path.join(__dirname, '..', '__test__', 'fixtures', 'idle-primary.js');

const CASES = [
  ['rcluster, default policy (reuseport)', {}],
  ['rcluster, SCHED_RR', { NODE_CLUSTER_SCHED_POLICY: 'rr' }],
  ['rcluster, SCHED_NONE', { NODE_CLUSTER_SCHED_POLICY: 'none' }],
  ['rcluster, default policy, restart: true', { IDLE_RESTART: '1' }],
  ['rcluster, default policy, hangTimeout: 5000', { IDLE_HANG: '5000' }],
  ['node:cluster (SCHED_RR)', { IDLE_IMPL: 'node' }],
];

function threads(pid) {
  const out = new Map();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const count = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)[1]);
      out.set(tid, { name, switches: count('voluntary_ctxt_switches') + count('nonvoluntary_ctxt_switches') });
    } catch { /* the thread ended */ }
  }
  return out;
}

async function measure(env) {
  const child = spawn(process.execPath, [FIXTURE], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  try {
    await new Promise((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).on('line', (l) => { if (JSON.parse(l).idle) resolve(); });
      child.once('exit', (code) => reject(new Error(`the primary exited (${code}) before its workers listened`)));
    });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const before = threads(child.pid);
    await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
    const rows = [];
    for (const [tid, t] of threads(child.pid)) {
      const start = before.get(tid);
      const thread = tid === String(child.pid) ? 'main (JS)' : t.name;
      if (start) rows.push({ thread, perSecond: (t.switches - start.switches) / SECONDS });
    }
    return rows.filter((r) => r.perSecond > 0 || r.thread === 'main (JS)' || r.thread === 'rcluster-core');
  } finally {
    child.kill('SIGKILL');
  }
}

(async () => {
  const results = [];
  console.log('| primary | thread: wake-ups a second |\n|---|---|');
  for (const [name, env] of CASES) {
    const rows = await measure(env);
    results.push({ case: name, env, threads: rows });
    console.log(`| ${name} | ${rows.map((r) => `${r.thread} ${r.perSecond}`).join(', ')} |`);
  }
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
  const file = path.join(__dirname, 'results', `idle-${stamp}.json`);
  fs.writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, seconds: SECONDS,
    results }, null, 2)}\n`);
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
