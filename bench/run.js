'use strict';
// rcluster's head-to-head benchmark (`npm run bench`).
//
// Every configuration runs the same HTTP server (bench/server.js, 2 workers)
// under the same load, in one run, rounds interleaved: for each round, each
// workload, each configuration in turn (A B C … A B C …), so that the
// machine's noise falls on all of them alike. Each (config, workload, round)
// gets a fresh server on a fresh port, a warm-up, then the measured run.
//
//   node bench/run.js [--duration S] [--rounds N] [--connections N]
//                     [--workloads a,b] [--configs x,y] [--quick]
//                     [--warmup S] [--threads N] [--workers N]
//                     [--loadgen wrk|autocannon] [--out DIR]
//
// Writes bench/results/<timestamp>.json, latest.json, latest.md, latest.svg.
// Every process it starts is killed when it exits, fails or is interrupted.

const { fork } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const loadgen = require('./loadgen');
const report = require('./report');
const { renderSvg } = require('./chart');
const { sig } = require('./stats');

const SERVER = path.join(__dirname, 'server.js');
const ROOT = path.join(__dirname, '..');

// ---------------------------------------------------------------- configs

const CONFIGS = [
  { key: 'rcluster-reuseport', label: 'rcluster reuseport', mode: 'rcluster', policy: 'reuseport', rcluster: true },
  { key: 'rcluster-rr', label: 'rcluster rr', mode: 'rcluster', policy: 'rr', rcluster: true },
  { key: 'rcluster-none', label: 'rcluster none', mode: 'rcluster', policy: 'none', rcluster: true },
  { key: 'node-rr', label: 'node:cluster RR', mode: 'node', policy: 'rr' },
  { key: 'node-none', label: 'node:cluster NONE', mode: 'node', policy: 'none' },
  { key: 'node-reuseport', label: 'node reusePort', mode: 'node-reuseport', policy: 'none', needs: 'reusePort' },
  { key: 'single', label: 'single process', mode: 'single', single: true },
];
const BASELINE = 'node-rr';

const WORKLOADS = [
  { key: 'keepalive', label: 'keep-alive', close: false,
    desc: 'keep-alive hello world', short: 'keep-alive hello world' },
  { key: 'close', label: 'conn/request', close: true,
    desc: 'one connection per request (`Connection: close`)', short: 'one connection per request (Connection: close)' },
  { key: 'mixed', label: 'mixed', close: true, slowEvery: 20, slowMs: 20,
    desc: 'one connection per request; 1 request in 20 burns 20 ms of CPU in its worker',
    short: 'conn/request; 1 in 20 requests burns 20 ms CPU' },
  { key: 'busy', label: 'busy primary', close: true, busy: true, noSingle: true,
    desc: "one connection per request; the primary's event loop is blocked 1 s every 2 s",
    short: "conn/request; primary's JS blocked 1 s every 2 s" },
  { key: 'kill', label: 'kill', close: true, kill: true, noSingle: true,
    desc: 'one connection per request; one of the 2 workers is SIGKILLed at 30% of the run, not restarted',
    short: 'conn/request; 1 of 2 workers SIGKILLed at 30% of the run' },
];

// ---------------------------------------------------------------- options

function usage(code) {
  const text = `usage: node bench/run.js [options]
  --duration S       seconds per measured run (default 5)
  --rounds N         rounds per (config, workload) (default 3)
  --connections N    wrk connections (default 64)
  --threads N        wrk threads (default 1)
  --workers N        cluster workers (default 2)
  --warmup S         warm-up seconds before each measured run (default 1; 0 with --quick)
  --workloads a,b    of: ${WORKLOADS.map((w) => w.key).join(', ')}
  --configs x,y      of: ${CONFIGS.map((c) => c.key).join(', ')}
  --loadgen NAME     wrk or autocannon (default: wrk when on PATH)
  --out DIR          results directory (default bench/results)
  --quick            1 s runs, 1 round, no warm-up (smoke check)
  --render FILE      no runs: rewrite latest.{json,md,svg} in the results
                     directory from a results JSON written earlier
`;
  (code ? process.stderr : process.stdout).write(text);
  process.exit(code);
}

function parseList(value, known, what) {
  const keys = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const k of keys) {
    if (!known.includes(k)) {
      process.stderr.write(`unknown ${what} '${k}' (known: ${known.join(', ')})\n`);
      process.exit(2);
    }
  }
  return keys;
}

function parseArgs(argv) {
  const o = {
    duration: 5, rounds: 3, connections: 64, threads: 1, workers: 2, warmup: 1,
    workloads: WORKLOADS.map((w) => w.key), configs: CONFIGS.map((c) => c.key),
    loadgen: undefined, out: path.join(__dirname, 'results'), quick: false,
  };
  const set = {};
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) { value = arg.slice(eq + 1); arg = arg.slice(0, eq); }
    const take = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) { process.stderr.write(`${arg} needs a value\n`); process.exit(2); }
      return argv[++i];
    };
    const posInt = (name, min = 1) => {
      const n = Number(take());
      if (!Number.isInteger(n) || n < min) { process.stderr.write(`${name} must be an integer >= ${min}\n`); process.exit(2); }
      return n;
    };
    switch (arg) {
      case '--duration': o.duration = posInt(arg); set.duration = true; break;
      case '--rounds': o.rounds = posInt(arg); set.rounds = true; break;
      case '--connections': o.connections = posInt(arg); break;
      case '--threads': o.threads = posInt(arg); break;
      case '--workers': o.workers = posInt(arg); break;
      case '--warmup': o.warmup = posInt(arg, 0); set.warmup = true; break;
      case '--workloads': o.workloads = parseList(take(), WORKLOADS.map((w) => w.key), 'workload'); break;
      case '--configs': o.configs = parseList(take(), CONFIGS.map((c) => c.key), 'config'); break;
      case '--loadgen': o.loadgen = take(); if (!['wrk', 'autocannon'].includes(o.loadgen)) usage(2); break;
      case '--out': o.out = path.resolve(take()); break;
      case '--quick': o.quick = true; break;
      case '--render': o.render = path.resolve(take()); break;
      case '-h': case '--help': usage(0); break;
      default: process.stderr.write(`unknown option ${arg}\n`); usage(2);
    }
  }
  if (o.quick) {
    if (!set.duration) o.duration = 1;
    if (!set.rounds) o.rounds = 1;
    if (!set.warmup) o.warmup = 0;
  }
  if (o.threads > o.connections) o.threads = o.connections;
  // Keep the listed order of the tables, whatever order was asked for.
  o.workloads = WORKLOADS.map((w) => w.key).filter((k) => o.workloads.includes(k));
  o.configs = CONFIGS.map((c) => c.key).filter((k) => o.configs.includes(k));
  return o;
}

// ---------------------------------------------------------------- processes

// Everything we started that may still run: killed on any way out.
const live = new Set(); // { kill() }

function killAll() {
  for (const entry of live) {
    try { entry.kill(); } catch { /* already gone */ }
  }
  live.clear();
}

process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, stopping servers\n`);
    killAll();
    process.exit(128 + os.constants.signals[sig]);
  });
}

function trackChild(child) {
  const entry = { kill: () => child.kill('SIGKILL') };
  live.add(entry);
  child.once('exit', () => live.delete(entry));
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Does this Node bind several sockets to one port with `reusePort`?
// (Node >= 22.12 / 23.1; older versions ignore the option.)
function nodeHasReusePort() {
  return new Promise((resolve) => {
    const a = net.createServer();
    const b = net.createServer();
    const done = (ok) => { a.close(); b.close(); resolve(ok); };
    a.on('error', () => done(false));
    b.on('error', () => done(false));
    a.listen({ port: 0, host: '127.0.0.1', reusePort: true }, () => {
      b.listen({ port: a.address().port, host: '127.0.0.1', reusePort: true }, () => done(true));
    });
  });
}

function procAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

const CLK_TCK = 100; // USER_HZ: 100 on every Linux ABI Node supports

// utime + stime of a process (all its threads), in seconds.
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

// A running bench server: its primary (or single process) and workers.
class Server {
  constructor(config, workload, opts) {
    this.config = config;
    this.workload = workload;
    this.opts = opts;
    this.output = '';
    this.waiters = [];
  }

  async start() {
    this.port = await freePort();
    const env = {
      ...process.env,
      BENCH_MODE: this.config.mode,
      BENCH_PORT: String(this.port),
      BENCH_WORKERS: String(this.opts.workers),
      BENCH_SLOW: String(this.workload.slowEvery || 0),
      BENCH_SLOW_MS: String(this.workload.slowMs || 0),
      BENCH_BUSY: this.workload.busy ? '1' : '0',
    };
    if (this.config.policy) env.NODE_CLUSTER_SCHED_POLICY = this.config.policy;
    else delete env.NODE_CLUSTER_SCHED_POLICY;
    // Its own process group (workers included) so that one kill takes all.
    const child = fork(SERVER, [], {
      cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    this.child = child;
    this.pids = new Set([child.pid]);
    const entry = { kill: () => this.killSync() };
    live.add(entry);
    this.entry = entry;
    const keep = (d) => { this.output = (this.output + d).slice(-4000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('message', (m) => {
      const i = this.waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m);
    });
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      this.exitStatus = signal || code;
      for (const w of this.waiters.splice(0)) w.reject(new Error(`server exited (${this.exitStatus})`));
      resolve();
    }));
    let ready;
    try {
      ready = await this.expect('ready', 20000);
    } catch (err) {
      await this.stop().catch(() => {});
      const out = this.output.trim();
      throw new Error(`${err.message}${out ? `; server output: ${out.slice(-600)}` : ''}`);
    }
    this.primaryPid = ready.primaryPid;
    this.workers = ready.workers;
    for (const w of ready.workers) this.pids.add(w.pid);
    return this;
  }

  expect(type, ms) {
    return new Promise((resolve, reject) => {
      if (this.exitStatus !== undefined) { reject(new Error(`server exited (${this.exitStatus})`)); return; }
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no '${type}' from the server in ${ms} ms`));
      }, ms);
      const waiter = {
        type,
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this.waiters.push(waiter);
    });
  }

  async request(type, ms = 10000) {
    const reply = this.expect(type, ms);
    this.child.send({ type });
    return reply;
  }

  killSync() {
    try { process.kill(-this.child.pid, 'SIGKILL'); } catch { /* group gone */ }
    for (const pid of this.pids) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }

  async stop() {
    this.killSync();
    // Bounded wait until the whole tree is gone.
    await Promise.race([this.exited, sleep(5000)]);
    for (let i = 0; i < 50 && [...this.pids].some(procAlive); i++) await sleep(100);
    live.delete(this.entry);
    const left = [...this.pids].filter(procAlive);
    if (left.length) throw new Error(`server processes still alive after SIGKILL: ${left.join(', ')}`);
  }
}

// ---------------------------------------------------------------- one run

async function runOnce(gen, config, workload, opts) {
  const server = await new Server(config, workload, opts).start();
  try {
    const url = `http://127.0.0.1:${server.port}/`;
    const base = { url, connections: opts.connections, threads: opts.threads, close: workload.close, timeout: 2 };
    if (opts.warmup > 0) await gen.run({ ...base, duration: opts.warmup }, trackChild);
    await server.request('reset');

    const cpu0 = cpuSeconds(server.primaryPid);
    let killed = null;
    let killTimer = null;
    if (workload.kill) {
      // Early enough that wrk's 2-s timeout check at 4 s sees requests left hanging.
      const at = Math.max(0.3, 0.3 * opts.duration) * 1000;
      const victim = server.workers[0];
      killTimer = setTimeout(() => {
        try { process.kill(victim.pid, 'SIGKILL'); killed = { ...victim, atMs: at }; } catch { /* gone */ }
      }, at);
    }
    let result;
    try {
      result = await gen.run({ ...base, duration: opts.duration }, trackChild);
    } finally {
      clearTimeout(killTimer);
    }
    const cpu1 = cpuSeconds(server.primaryPid);
    const { counts, conns: connCounts } = await server.request('counts');

    const conns = workload.close ? result.requests : opts.connections;
    const cpu = cpu1 - cpu0;
    const values = Object.entries(counts)
      .filter(([id]) => !killed || Number(id) !== killed.id)
      .map(([, n]) => n);
    const share = !config.single && !workload.kill && values.length === opts.workers ? spreadRatio(values) : null;
    return {
      config: config.key,
      workload: workload.key,
      rps: result.rps,
      requests: result.requests,
      seconds: result.seconds,
      p50Ms: result.p50Ms,
      p99Ms: result.p99Ms,
      errors: result.errors,
      failed: result.errors.total,
      primaryCpuSec: config.single ? null : cpu,
      connections: conns,
      primaryCpuPer10k: config.single || !(conns > 0) ? null : (cpu / conns) * 10000,
      counts,
      connCounts,
      share,
      connShare: share === null || !connCounts ? null : spreadRatio(Object.values(connCounts)),
      killed,
      command: result.command,
      raw: result.raw,
    };
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------- main

function machineInfo(gen) {
  let model = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) model = m[1].trim();
  } catch { /* not Linux */ }
  const cmd = process.env.npm_lifecycle_event === 'bench' && process.argv.length === 2
    ? 'npm run bench'
    : ['node', path.relative(process.cwd(), process.argv[1]) || process.argv[1], ...process.argv.slice(2)].join(' ');
  return {
    cores: os.availableParallelism ? os.availableParallelism() : os.cpus().length,
    cpuModel: model,
    node: process.version,
    nodePath: process.execPath,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    loadgen: gen.version,
    command: cmd,
    loadavgStart: os.loadavg(),
  };
}

function spreadRatio(values) {
  if (values.length < 2) return null;
  // A worker that served nothing counts as having served one (a finite, huge ratio).
  return Math.max(...values) / Math.max(1, Math.min(...values));
}

function fmtRun(r) {
  const share = r.share === null ? '' : `  share ${sig(r.share, 3)}`;
  const cpu = r.primaryCpuPer10k === null ? '' : `  cpu/10k ${sig(r.primaryCpuPer10k, 2)}s`;
  return `${Math.round(r.rps).toString().padStart(6)} req/s  p50 ${sig(r.p50Ms, 3)}ms  p99 ${sig(r.p99Ms, 3)}ms` +
    `  err ${r.failed}${r.failed ? ` (c${r.errors.connect}/r${r.errors.read}/w${r.errors.write}/t${r.errors.timeout}/n${r.errors.non2xx})` : ''}` +
    `${cpu}${share}`;
}

function stamp(date) {
  // ISO 8601 basic format (no colons, so the name works everywhere).
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

function writeAtomic(file, text) {
  const tmp = path.join(path.dirname(file), `tmp-${process.pid}-${path.basename(file)}`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function writeReports(dir, data) {
  writeAtomic(path.join(dir, 'latest.json'), `${JSON.stringify(data, null, 1)}\n`);
  writeAtomic(path.join(dir, 'latest.md'), report.markdown(data));
  writeAtomic(path.join(dir, 'latest.svg'), renderSvg(data));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.render) {
    const data = JSON.parse(fs.readFileSync(opts.render, 'utf8'));
    data.targets = report.targets(data.summary, data.runs);
    fs.mkdirSync(opts.out, { recursive: true });
    writeReports(opts.out, data);
    console.log(report.targetsText(data));
    console.log(`\nwrote latest.{json,md,svg} in ${path.relative(process.cwd(), opts.out) || '.'} from ${opts.render}`);
    return;
  }
  const gen = loadgen.pick(opts.loadgen);
  const notes = [];

  if (opts.configs.includes('node-reuseport') && !(await nodeHasReusePort())) {
    opts.configs = opts.configs.filter((k) => k !== 'node-reuseport');
    notes.push(`node reusePort skipped: Node ${process.version} has no \`reusePort\` listen option (added in 22.12 / 23.1).`);
  }
  const configs = CONFIGS.filter((c) => opts.configs.includes(c.key));
  const workloads = WORKLOADS.filter((w) => opts.workloads.includes(w.key));
  const plan = [];
  for (let round = 1; round <= opts.rounds; round++) {
    for (const w of workloads) {
      for (const c of configs) {
        if (w.noSingle && c.single) continue;
        plan.push({ round, w, c });
      }
    }
  }
  if (workloads.some((w) => w.noSingle) && configs.some((c) => c.single)) {
    notes.push('The single process has no primary: it is left out of the busy-primary and kill workloads.');
  }

  const machine = machineInfo(gen);
  const started = new Date();
  const perRun = opts.warmup + opts.duration + 1.5;
  console.log(`rcluster bench: load generator ${gen.version}${gen.name === 'wrk' ? ` (wrk found on PATH at ${gen.path})` : opts.loadgen === 'autocannon' ? ' (--loadgen autocannon)' : ' (wrk not on PATH)'}`);
  console.log(`  ${machine.cores} cores, ${machine.cpuModel}, Node ${machine.node}, ${machine.kernel}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`  configs: ${configs.map((c) => c.key).join(', ')}`);
  console.log(`  workloads: ${workloads.map((w) => w.key).join(', ')}`);
  console.log(`  ${opts.rounds} round(s) × ${opts.duration} s, warm-up ${opts.warmup} s, ${opts.connections} connections, ` +
    `${opts.threads} thread(s), ${opts.workers} workers: ${plan.length} runs, about ${Math.ceil((plan.length * perRun) / 60)} min`);
  for (const n of notes) console.log(`  note: ${n}`);

  const runs = [];
  let i = 0;
  for (const { round, w, c } of plan) {
    i++;
    const tag = `[${String(i).padStart(String(plan.length).length)}/${plan.length}] r${round} ${w.key.padEnd(9)} ${c.key.padEnd(18)}`;
    let result = null;
    // A run can break when the addon is rebuilt under us: one retry.
    for (let attempt = 1; attempt <= 2 && !result; attempt++) {
      try {
        result = await runOnce(gen, c, w, opts);
      } catch (err) {
        console.log(`${tag} failed (attempt ${attempt}): ${err.message.split('\n')[0]}`);
        if (attempt === 2) {
          runs.push({ config: c.key, workload: w.key, round, error: err.message });
        } else {
          await sleep(1000);
        }
      }
    }
    if (result) {
      result.round = round;
      runs.push(result);
      console.log(`${tag} ${fmtRun(result)}`);
    }
  }

  machine.loadavgEnd = os.loadavg();
  const finished = new Date();
  const summary = report.summarize(runs, configs, workloads);
  const targets = report.targets(summary, runs);
  const data = {
    benchmark: 'rcluster head-to-head',
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    machine,
    options: {
      duration: opts.duration, rounds: opts.rounds, connections: opts.connections, threads: opts.threads,
      workers: opts.workers, warmup: opts.warmup, loadgen: gen.name, quick: opts.quick,
    },
    baseline: BASELINE,
    configs: configs.map(({ key, label, mode, policy }) => ({ key, label, mode, policy })),
    workloads: workloads.map(({ key, label, desc, short, close }) => ({ key, label, desc, short, close })),
    notes,
    summary,
    targets,
    runs,
  };

  fs.mkdirSync(opts.out, { recursive: true });
  const stampFile = path.join(opts.out, `${stamp(started)}.json`);
  writeAtomic(stampFile, `${JSON.stringify(data, null, 1)}\n`);
  writeReports(opts.out, data);

  console.log('');
  console.log(report.targetsText(data));
  const failedRuns = runs.filter((r) => r.error).length;
  console.log(`\nwrote ${path.relative(process.cwd(), stampFile)}, latest.{json,md,svg} in ${path.relative(process.cwd(), opts.out) || '.'}` +
    ` (${Math.round((finished - started) / 1000)} s${failedRuns ? `, ${failedRuns} failed run(s)` : ''})`);
  return failedRuns === runs.length ? 1 : 0;
}

main().then((code = 0) => {
  // Nothing of ours may keep running (and an IPC channel would keep us alive).
  killAll();
  process.exit(code);
}, (err) => {
  console.error(err.stack || err);
  killAll();
  process.exit(1);
});
