'use strict';
// Load generators: wrk when it is on PATH, else autocannon (only if it is
// installed; it is not a dependency of this package). Both return the same
// shape:
//   { requests, rps, p50Ms, p99Ms, errors: {connect, read, write, timeout, non2xx, total}, raw }

const { spawn, execFileSync } = require('node:child_process');
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

module.exports = { pick, parseWrk, toMs };
