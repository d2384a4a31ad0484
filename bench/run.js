'use strict';
// rcluster's head-to-head benchmark (`npm run bench`).
//
// Every configuration runs the same HTTP server (bench/server.js, 2 workers)
// under the same load, in one run, rounds interleaved: for each round, each
// workload, each configuration in turn (A B C … A B C …), so that the
// machine's noise falls on all of them alike. Each (config, workload, round)
// gets a fresh server on a fresh port, a warm-up, then the measured run.
//
// The ipc workload (`--workloads ipc`, or one of its cases by name) needs no
// wrk: a primary forks one worker that echoes every message back
// (bench/ipc.js), and the primary sends a fixed number of messages, a set
// number in flight, under a time cap. Its cases: JSON 64 B and 4 KB and
// advanced 64 B with 64 in flight, JSON 64 B one at a time. It runs only
// node:cluster (node-rr) and rcluster's default policy (rcluster-reuseport):
// the policy does not touch IPC. It measures messages/s and the primary's CPU
// per message, all threads (process.cpuUsage()) and the JS thread alone
// (/proc/self/task/<pid>/schedstat). It is in the default set: its 4 cases ×
// 2 configs × 3 rounds add about 2 minutes (--ipc-scale shrinks the counts).
//
//   node bench/run.js [--duration S] [--rounds N] [--connections N]
//                     [--workloads a,b] [--configs x,y] [--quick]
//                     [--warmup S] [--threads N] [--workers N]
//                     [--loadgen wrk|autocannon] [--ipc-scale F] [--out DIR]
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
const IPC_PRIMARY = path.join(__dirname, 'ipc.js');
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
  // The sticky workload's configs (and only its): client-address affinity.
  { key: 'rcluster-sticky', label: "rcluster sticky: 'ip' (reuseport)", mode: 'rcluster', policy: 'reuseport',
    rcluster: true, sticky: 'ip' },
  { key: 'rcluster-sticky-rr', label: "rcluster sticky: 'ip' (rr)", mode: 'rcluster', policy: 'rr',
    rcluster: true, sticky: 'ip' },
  { key: 'node-sticky-session', label: 'node:cluster + sticky-session', mode: 'node-sticky-session', sticky: 'lib' },
  { key: 'node-socketio-sticky', label: 'node:cluster + @socket.io/sticky', mode: 'node-socketio-sticky',
    policy: 'rr', sticky: 'lib' },
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
  { key: 'stall', label: 'stall', close: true, stall: true, noSingle: true,
    desc: 'one connection per request; one of the 2 workers blocks its event loop 200 ms every 1 s',
    short: 'conn/request; 1 of 2 workers blocked 200 ms every 1 s' },
  { key: 'busy', label: 'busy primary', close: true, busy: true, noSingle: true,
    desc: "one connection per request; the primary's event loop is blocked 1 s every 2 s",
    short: "conn/request; primary's JS blocked 1 s every 2 s" },
  { key: 'kill', label: 'kill', close: true, kill: true, noSingle: true,
    desc: 'one connection per request; one of the 2 workers is SIGKILLed at 30% of the run, not restarted',
    short: 'conn/request; 1 of 2 workers SIGKILLed at 30% of the run' },
  { key: 'sticky', label: 'sticky', close: true, sticky: true, sources: 16,
    desc: 'one connection per request from 16 client addresses (127.0.0.2-17), each expected to stay on one worker',
    short: 'conn/request from 16 client addresses; affinity' },
  // The ipc cases: `messages` echoes measured per run (about 2 s for node:cluster on a 2-core EPYC).
  { key: 'ipc-json64', label: 'ipc json 64 B',
    ipc: { serialization: 'json', bytes: 64, inflight: 64, messages: 250000 },
    desc: 'echo, JSON messages of 64 B, 64 in flight', short: 'echo: JSON 64 B, 64 in flight' },
  { key: 'ipc-json4k', label: 'ipc json 4 KB',
    ipc: { serialization: 'json', bytes: 4096, inflight: 64, messages: 50000 },
    desc: 'echo, JSON messages of 4 KB, 64 in flight', short: 'echo: JSON 4 KB, 64 in flight' },
  { key: 'ipc-adv64', label: 'ipc advanced 64 B',
    ipc: { serialization: 'advanced', bytes: 64, inflight: 64, messages: 100000 },
    desc: "echo, the same 64-B objects with `serialization: 'advanced'`, 64 in flight",
    short: 'echo: advanced 64 B, 64 in flight' },
  { key: 'ipc-json64-1', label: 'ipc json 64 B, 1 in flight',
    ipc: { serialization: 'json', bytes: 64, inflight: 1, messages: 60000 },
    desc: 'echo, JSON messages of 64 B, one at a time', short: 'echo: JSON 64 B, one at a time' },
];
const IPC_KEYS = WORKLOADS.filter((w) => w.ipc).map((w) => w.key);
// node:cluster's default and rcluster's default: the scheduling policy does not touch IPC.
const IPC_CONFIGS = ['rcluster-reuseport', 'node-rr'];
const IPC_CAP_MS = 15000;

// ---------------------------------------------------------------- options

function usage(code) {
  const text = `usage: node bench/run.js [options]
  --duration S       seconds per measured run (default 5)
  --rounds N         rounds per (config, workload) (default 3)
  --connections N    wrk connections (default 64)
  --threads N        wrk threads (default 1)
  --workers N        cluster workers (default 2)
  --warmup S         warm-up seconds before each measured run (default 1; 0 with --quick)
  --workloads a,b    of: ${WORKLOADS.map((w) => w.key).join(', ')},
                     or ipc for all the ipc-* cases
  --configs x,y      of: ${CONFIGS.map((c) => c.key).join(', ')}
  --loadgen NAME     wrk or autocannon (default: wrk when on PATH)
  --ipc-scale F      multiply the ipc cases' message counts by F (default 1; 0.1 with --quick)
  --out DIR          results directory (default bench/results)
  --quick            1 s runs, 1 round, no warm-up (smoke check)
  --render FILE      no runs: rewrite latest.{json,md,svg} in the results
                     directory from a results JSON written earlier
`;
  (code ? process.stderr : process.stdout).write(text);
  process.exit(code);
}

function parseList(value, known, what, groups = {}) {
  const keys = value.split(',').map((s) => s.trim()).filter(Boolean).flatMap((k) => groups[k] || [k]);
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
    loadgen: undefined, out: path.join(__dirname, 'results'), quick: false, ipcScale: 1,
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
      case '--workloads':
        o.workloads = parseList(take(), WORKLOADS.map((w) => w.key), 'workload', { ipc: IPC_KEYS });
        break;
      case '--configs': o.configs = parseList(take(), CONFIGS.map((c) => c.key), 'config'); break;
      case '--loadgen': o.loadgen = take(); if (!['wrk', 'autocannon'].includes(o.loadgen)) usage(2); break;
      case '--ipc-scale': {
        o.ipcScale = Number(take());
        if (!(o.ipcScale > 0)) { process.stderr.write('--ipc-scale must be a number > 0\n'); process.exit(2); }
        set.ipcScale = true;
        break;
      }
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
    if (!set.ipcScale) o.ipcScale = 0.1;
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

// The environment of bench/ipc.js for one ipc case.
function ipcEnv(config, workload, opts) {
  const messages = ipcMessages(workload, opts);
  return {
    ...process.env,
    BENCH_MODE: config.mode,
    BENCH_SERIALIZATION: workload.ipc.serialization,
    BENCH_BYTES: String(workload.ipc.bytes),
    BENCH_INFLIGHT: String(workload.ipc.inflight),
    BENCH_MESSAGES: String(messages),
    BENCH_WARMUP: String(opts.warmup > 0 ? Math.ceil(messages / 10) : 0),
    BENCH_CAP_MS: String(IPC_CAP_MS),
  };
}

function ipcMessages(workload, opts) {
  return Math.max(100, Math.round(workload.ipc.messages * opts.ipcScale));
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
    const ipc = this.workload.ipc;
    this.port = await freePort();
    const env = ipc ? ipcEnv(this.config, this.workload, this.opts) : {
      ...process.env,
      BENCH_MODE: this.config.mode,
      BENCH_PORT: String(this.port),
      BENCH_WORKERS: String(this.opts.workers),
      BENCH_SLOW: String(this.workload.slowEvery || 0),
      BENCH_SLOW_MS: String(this.workload.slowMs || 0),
      BENCH_BUSY: this.workload.busy ? '1' : '0',
      BENCH_STALL: this.workload.stall ? '1' : '0',
      BENCH_STICKY: this.config.sticky || '',
    };
    if (this.config.policy) env.NODE_CLUSTER_SCHED_POLICY = this.config.policy;
    else delete env.NODE_CLUSTER_SCHED_POLICY;
    // Its own process group (workers included) so that one kill takes all.
    const child = fork(ipc ? IPC_PRIMARY : SERVER, [], {
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

async function runIpcOnce(config, workload, opts) {
  const server = await new Server(config, workload, opts).start();
  try {
    // Warm-up and measured run, each capped in the primary; the margin covers a stalled primary.
    const r = await server.request('result', 2 * IPC_CAP_MS + 10000);
    if (!(r.messages > 0)) throw new Error(`no echo in ${IPC_CAP_MS} ms`);
    return {
      config: config.key,
      workload: workload.key,
      messages: r.messages,
      planned: ipcMessages(workload, opts),
      capped: r.capped,
      seconds: r.seconds,
      msgsPerSec: r.messages / r.seconds,
      cpuAllUsPerMsg: r.cpuAllUs / r.messages,
      cpuJsUsPerMsg: r.cpuJsNs / 1000 / r.messages,
      jsClock: r.jsClock,
    };
  } finally {
    await server.stop();
  }
}

async function runOnce(gen, config, workload, opts) {
  if (workload.ipc) return runIpcOnce(config, workload, opts);
  const server = await new Server(config, workload, opts).start();
  try {
    const url = `http://127.0.0.1:${server.port}/`;
    const base = { url, connections: opts.connections, threads: opts.threads, close: workload.close, timeout: 2 };
    if (workload.sticky) {
      // wrk cannot bind source addresses: the Node generator of loadgen.js does.
      const sources = Array.from({ length: workload.sources }, (_, i) => `127.0.0.${i + 2}`);
      const sid = (s) => `client${s.replace(/\./g, '-')}`.padEnd(20, 'x');
      gen = { run: (o, track) => loadgen.runFromSources({ ...o, port: server.port, sources, sid, track }) };
    }
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
      ...(workload.sticky ? { affinity: result.affinity, worstAffinity: result.worstAffinity } : {}),
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
  if (r.msgsPerSec !== undefined) {
    return `${Math.round(r.msgsPerSec).toString().padStart(6)} msg/s  ` +
      `cpu/msg ${sig(r.cpuAllUsPerMsg, 3)} µs all threads, ` +
      `${sig(r.cpuJsUsPerMsg, 3)} µs JS thread${r.capped ? `  CAPPED at ${r.messages}/${r.planned} messages` : ''}`;
  }
  const share = r.share === null ? '' : `  share ${sig(r.share, 3)}`;
  const cpu = r.primaryCpuPer10k === null ? '' : `  cpu/10k ${sig(r.primaryCpuPer10k, 2)}s`;
  return `${Math.round(r.rps).toString().padStart(6)} req/s  p50 ${sig(r.p50Ms, 3)}ms  p99 ${sig(r.p99Ms, 3)}ms` +
    `  err ${r.failed}${r.failed ? ` (c${r.errors.connect}/r${r.errors.read}/w${r.errors.write}/t${r.errors.timeout}/n${r.errors.non2xx})` : ''}` +
    `${cpu}${share}${r.affinity === undefined ? '' : `  affinity ${sig(r.affinity * 100, 4)}%`}`;
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
  const notes = [];
  const httpWanted = opts.workloads.some((k) => !IPC_KEYS.includes(k));
  // The ipc workload needs no load generator.
  const gen = httpWanted ? loadgen.pick(opts.loadgen) : { name: 'none', version: 'none (ipc only)' };

  if (httpWanted && opts.configs.includes('node-reuseport') && !(await nodeHasReusePort())) {
    opts.configs = opts.configs.filter((k) => k !== 'node-reuseport');
    notes.push(`node reusePort skipped: Node ${process.version} has no \`reusePort\` listen option (added in 22.12 / 23.1).`);
  }
  const workloads = WORKLOADS.filter((w) => opts.workloads.includes(w.key));
  const plan = [];
  const asked = CONFIGS.filter((c) => opts.configs.includes(c.key));
  for (let round = 1; round <= opts.rounds; round++) {
    for (const w of workloads) {
      for (const c of asked) {
        if (w.noSingle && c.single) continue;
        if (w.ipc && !IPC_CONFIGS.includes(c.key)) continue;
        if (Boolean(w.sticky) !== Boolean(c.sticky) && !w.ipc) continue;
        plan.push({ round, w, c });
      }
    }
  }
  // Only the configs that run (an ipc-only run has two).
  const configs = asked.filter((c) => plan.some((p) => p.c === c));
  if (workloads.some((w) => w.noSingle) && configs.some((c) => c.single)) {
    notes.push('The single process has no primary: it is left out of the busy-primary and kill workloads.');
  }

  if (workloads.some((w) => w.ipc)) {
    notes.push('The ipc workload runs node:cluster and rcluster\'s default policy only ' +
      '(the policy does not touch IPC).');
    if (!IPC_CONFIGS.some((k) => opts.configs.includes(k))) {
      notes.push(`The ipc workload had no config to run: it runs only ${IPC_CONFIGS.join(' and ')}.`);
    }
  }

  const machine = machineInfo(gen);
  const started = new Date();
  // The ipc runs take about 2 s (node) to 4 s (rcluster) at --ipc-scale 1, plus spawning.
  const perRun = (w) => (w.ipc
    ? 1 + 3 * opts.ipcScale * (opts.warmup > 0 ? 1.1 : 1)
    : opts.warmup + opts.duration + 1.5);
  const estimate = plan.reduce((sum, p) => sum + perRun(p.w), 0);
  console.log(`rcluster bench: load generator ${gen.version}${gen.name === 'wrk' ? ` (wrk found on PATH at ${gen.path})` : gen.name === 'none' ? '' : opts.loadgen === 'autocannon' ? ' (--loadgen autocannon)' : ' (wrk not on PATH)'}`);
  console.log(`  ${machine.cores} cores, ${machine.cpuModel}, Node ${machine.node}, ${machine.kernel}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`  configs: ${configs.map((c) => c.key).join(', ')}`);
  console.log(`  workloads: ${workloads.map((w) => w.key).join(', ')}`);
  const shape = httpWanted
    ? `${opts.rounds} round(s) × ${opts.duration} s, warm-up ${opts.warmup} s, ${opts.connections} connections, ` +
      `${opts.threads} thread(s), ${opts.workers} workers`
    : `${opts.rounds} round(s) of the ipc cases, message counts × ${opts.ipcScale}`;
  console.log(`  ${shape}: ${plan.length} runs, about ${Math.ceil(estimate / 60)} min`);
  for (const n of notes) console.log(`  note: ${n}`);

  const runs = [];
  let i = 0;
  for (const { round, w, c } of plan) {
    i++;
    const tag = `[${String(i).padStart(String(plan.length).length)}/${plan.length}] r${round} ${w.key.padEnd(12)} ${c.key.padEnd(18)}`;
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
      workers: opts.workers, warmup: opts.warmup, loadgen: gen.name, quick: opts.quick, ipcScale: opts.ipcScale,
      ipcCapMs: IPC_CAP_MS,
    },
    baseline: BASELINE,
    configs: configs.map(({ key, label, mode, policy }) => ({ key, label, mode, policy })),
    workloads: workloads.map(({ key, label, desc, short, close, ipc }) => ({
      key, label, desc, short, close, ...(ipc ? { ipc: { ...ipc, messages: ipcMessages({ ipc }, opts) } } : {}),
    })),
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
