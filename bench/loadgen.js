'use strict';
// Load generators: wrk when it is on PATH, else autocannon (only if it is
// installed; it is not a dependency of this package). Both return the same
// shape:
//   { requests, rps, p50Ms, p99Ms, errors: {connect, read, write, timeout, non2xx, total}, raw }

const { spawn, execFileSync, fork } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

function onPath(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch { /* not here */ }
  }
  return null;
}

// Picks the load generator: `forced` is 'wrk' or 'autocannon' (or undefined: wrk if found).
function pick(forced) {
  const wrk = onPath('wrk');
  if (forced !== 'autocannon' && wrk) {
    let version = 'wrk';
    try {
      // `wrk --version` prints its banner and exits 1.
      execFileSync(wrk, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
    } catch (e) {
      const out = String(e.stdout || '') + String(e.stderr || '');
      const line = out.split('\n').find((l) => /^wrk /.test(l));
      if (line) version = line.replace(/\s*Copyright.*$/, '').trim();
    }
    return { name: 'wrk', path: wrk, version, run: (o, track) => runWrk(wrk, o, track) };
  }
  if (forced === 'wrk') throw new Error('wrk is not on PATH (Debian: apt-get install -y wrk)');
  let autocannon;
  try {
    autocannon = require('autocannon');
  } catch {
    throw new Error('no load generator: install wrk (Debian: apt-get install -y wrk) ' +
      'or autocannon (npm install --no-save autocannon)');
  }
  let version = 'autocannon';
  try { version = `autocannon ${require('autocannon/package.json').version}`; } catch { /* unknown */ }
  return { name: 'autocannon', version, run: (o) => runAutocannon(autocannon, o) };
}

// "850.12us" / "17.90ms" / "1.02s" / "2.00m" -> milliseconds
function toMs(text) {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text.trim());
  if (!m) return NaN;
  const scale = { us: 1e-3, ms: 1, s: 1e3, m: 6e4, h: 3.6e6 }[m[2]];
  return Number(m[1]) * scale;
}

function parseWrk(out) {
  const num = (re) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : NaN;
  };
  const pct = (p) => {
    const m = new RegExp(`^\\s*${p}%\\s+(\\S+)`, 'm').exec(out);
    return m ? toMs(m[1]) : NaN;
  };
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = {
    connect: errs ? Number(errs[1]) : 0,
    read: errs ? Number(errs[2]) : 0,
    write: errs ? Number(errs[3]) : 0,
    timeout: errs ? Number(errs[4]) : 0,
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0,
  };
  errors.total = errors.connect + errors.read + errors.write + errors.timeout + errors.non2xx;
  return {
    requests: num(/(\d+) requests in /),
    seconds: toMs(/requests in ([\d.]+\w+),/.exec(out)?.[1] || '') / 1000,
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: pct(50),
    p99Ms: pct(99),
    errors,
  };
}

// opts: { url, connections, threads, duration (s), close, timeout (s) }
// track(child): registers the child so that the runner can kill it on exit.
function runWrk(bin, opts, track) {
  const args = [
    `-t${opts.threads}`, `-c${opts.connections}`, `-d${opts.duration}s`,
    `--timeout`, `${opts.timeout}s`, '--latency',
  ];
  if (opts.close) args.push('-H', 'Connection: close');
  args.push(opts.url);
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    if (track) track(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const guard = setTimeout(() => child.kill('SIGKILL'), (opts.duration + opts.timeout + 15) * 1000);
    child.on('error', (e) => { clearTimeout(guard); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      const parsed = parseWrk(out);
      if (code !== 0 || !Number.isFinite(parsed.rps)) {
        reject(new Error(`wrk ${args.join(' ')} failed (${signal || code}): ${err.trim() || out.trim()}`));
        return;
      }
      resolve({ ...parsed, raw: out, command: `wrk ${args.map(q).join(' ')}` });
    });
  });
}

function q(s) {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

function runAutocannon(autocannon, opts) {
  return new Promise((resolve, reject) => {
    const headers = opts.close ? { connection: 'close' } : {};
    autocannon({
      url: opts.url,
      connections: opts.connections,
      duration: opts.duration,
      timeout: opts.timeout,
      headers,
    }, (err, r) => {
      if (err) return reject(err);
      const errors = {
        connect: 0,
        read: Math.max(0, (r.errors || 0) - (r.timeouts || 0)),
        write: 0,
        timeout: r.timeouts || 0,
        non2xx: r.non2xx || 0,
      };
      errors.total = errors.read + errors.timeout + errors.non2xx;
      const requests = r['2xx'] + (r.non2xx || 0);
      resolve({
        requests,
        seconds: r.duration,
        rps: requests / r.duration,
        p50Ms: r.latency.p50,
        p99Ms: r.latency.p99,
        errors,
        raw: JSON.stringify({ requests: r.requests, latency: r.latency, errors: r.errors, timeouts: r.timeouts }),
        command: `autocannon -c ${opts.connections} -d ${opts.duration}${opts.close ? " -H 'Connection: close'" : ''} ${opts.url}`,
      });
    });
  });
}

// The sticky workload's load generator (wrk cannot bind source addresses):
// lanes, each bound to its source (`laneSources`), each a loop of one
// connection per request (`Connection: close`) for `duration` seconds. The server names the worker in `x-worker`; `affinity` is the share
// of each source's requests its most frequent worker served (all sources
// together, and the worst one). `sid(source)` adds `?sid=` for routers that
// stick by session id (@socket.io/sticky).
function runLanes(opts) {
  const net = require('node:net');
  const { port, laneSources, duration, timeout = 2, sid } = opts;
  const perSource = new Map(laneSources.map((s) => [s, new Map()]));
  const latencies = [];
  const errors = { connect: 0, read: 0, write: 0, timeout: 0, non2xx: 0 };
  const started = performance.now();
  const end = started + duration * 1000;
  // One watchdog for every lane (a timer per connection costs the generator
  // CPU the servers would otherwise get).
  const inFlight = new Set();
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const f of inFlight) if (now - f.t0 > timeout * 1000) f.fail('timeout');
  }, 100);
  const lane = (source) => new Promise((resolve) => {
    const request = `GET /${sid ? `?sid=${sid(source)}` : ''} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`;
    const counts = perSource.get(source);
    const next = () => {
      if (performance.now() >= end) return resolve();
      const f = { t0: performance.now(), data: '', connected: false, done: false };
      const c = net.connect({ host: '127.0.0.1', port, localAddress: source });
      f.fail = (kind) => {
        if (f.done) return;
        f.done = true;
        inFlight.delete(f);
        errors[kind]++;
        c.destroy();
        setImmediate(next);
      };
      inFlight.add(f);
      c.on('connect', () => { f.connected = true; c.write(request); });
      c.on('data', (d) => { f.data += d; });
      c.on('error', () => f.fail(f.connected ? 'read' : 'connect'));
      c.on('close', () => {
        if (f.done) return;
        f.done = true;
        inFlight.delete(f);
        if (!f.data.startsWith('HTTP/1.1 200')) errors[f.data ? 'non2xx' : 'read']++;
        else {
          latencies.push(performance.now() - f.t0);
          const w = /\r\nx-worker: (\d+)/i.exec(f.data);
          const key = w ? w[1] : '?';
          counts.set(key, (counts.get(key) || 0) + 1);
        }
        next();
      });
    };
    next();
  });
  const lanes = laneSources.map(lane);
  return Promise.all(lanes).then(() => {
    clearInterval(watchdog);
    const bySource = {};
    for (const [src, counts] of perSource) bySource[src] = Object.fromEntries(counts);
    return { seconds: (performance.now() - started) / 1000, latencies, errors, bySource };
  });
}

// Runs the lanes in `processes` child processes (a single Node thread cannot
// open connections as fast as the servers accept them), lane i of all of
// them bound to sources[i % n], and merges what they measured.
async function runFromSources(opts) {
  const processes = opts.processes || 2;
  const { sources, connections, duration, sid } = opts;
  const parts = await Promise.all(Array.from({ length: processes }, (_, p) => new Promise((resolve, reject) => {
    // Each process takes every processes-th lane, so each covers all sources alike.
    const mine = Array.from({ length: connections }, (_, i) => i).filter((i) => i % processes === p);
    const laneSources = mine.map((i) => sources[i % sources.length]);
    const sids = sid ? Object.fromEntries(sources.map((s) => [s, sid(s)])) : null;
    const child = fork(__filename, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    if (opts.track) opts.track(child);
    const guard = setTimeout(() => child.kill('SIGKILL'), (duration + 20) * 1000);
    child.once('message', (m) => { clearTimeout(guard); child.kill(); resolve(m); });
    child.once('exit', (code, signal) => { clearTimeout(guard); reject(new Error(`load generator exited (${signal || code})`)); });
    child.send({ ...opts, sid: undefined, sids, laneSources, track: undefined });
  })));
  const latencies = parts.flatMap((x) => x.latencies).sort((a, b) => a - b);
  const seconds = Math.max(...parts.map((x) => x.seconds));
  const errors = { connect: 0, read: 0, write: 0, timeout: 0, non2xx: 0 };
  const bySource = {};
  for (const x of parts) {
    for (const k of Object.keys(errors)) errors[k] += x.errors[k];
    for (const [src, counts] of Object.entries(x.bySource)) {
      bySource[src] = bySource[src] || {};
      for (const [w, n] of Object.entries(counts)) bySource[src][w] = (bySource[src][w] || 0) + n;
    }
  }
  const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : NaN);
  let modal = 0;
  let worst = 1;
  for (const counts of Object.values(bySource)) {
    const n = Object.values(counts).reduce((a, b) => a + b, 0);
    const top = Math.max(0, ...Object.values(counts));
    modal += top;
    if (n > 0) worst = Math.min(worst, top / n);
  }
  errors.total = errors.connect + errors.read + errors.write + errors.timeout + errors.non2xx;
  return {
    requests: latencies.length,
    seconds,
    rps: latencies.length / seconds,
    p50Ms: pct(0.5),
    p99Ms: pct(0.99),
    errors,
    affinity: latencies.length ? modal / latencies.length : null,
    worstAffinity: latencies.length ? worst : null,
    bySource,
    raw: JSON.stringify(bySource),
    command: `node bench/loadgen.js × ${processes} processes: ${connections} lanes over ${sources.length} sources ` +
      `(${sources[0]}..${sources[sources.length - 1]}), ${duration} s, Connection: close${sid ? ', ?sid= per source' : ''}`,
  };
}

// A child of runFromSources: runs its lanes, reports, and waits to be killed.
if (require.main === module) {
  process.once('message', (o) => {
    runLanes({ ...o, sid: o.sids ? (s) => o.sids[s] : null }).then((r) => process.send(r));
  });
}

module.exports = { pick, parseWrk, toMs, runFromSources };
