'use strict';
// The commands that talk to a running CLI through its control socket:
// ls, status, reload, scale, stop. Each failure is one line and exit 1
// (exit 2 for a bad command line). Loads no native code.

const net = require('node:net');
const { readLines, encode } = require('./protocol');
const { homeDir, checkPrivate, socketPath, listNames, HomeError } = require('./home');
const { UsageError, parseName, parseCount, MAX_INSTANCES } = require('./options');

const COMMANDS = ['ls', 'status', 'reload', 'scale', 'stop'];
const QUICK_MS = 5000; // info and status answer at once; reload, scale and stop take their time
const WATCH_MS = 1000;

class CommandError extends Error {}

function connectionError(err, name) {
  if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
    return new CommandError(`no app named ${JSON.stringify(name)} is running (rcluster ls lists them)`);
  }
  if (err.code === 'EACCES' || err.code === 'EPERM') {
    return new CommandError(`permission denied: the control socket of ${JSON.stringify(name)} belongs to another user`);
  }
  return new CommandError(`cannot reach ${JSON.stringify(name)}: ${err.message}`);
}

function privateHome() {
  const dir = homeDir();
  try {
    checkPrivate(dir);
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    throw err instanceof HomeError ? new CommandError(err.message) : err;
  }
  return dir;
}

// One request, one response. Rejects with a CommandError.
function request(name, cmd, args = {}, { timeout = 0, dir = privateHome() } = {}) {
  return new Promise((resolve, reject) => {
    if (!dir) {
      reject(connectionError({ code: 'ENOENT' }, name));
      return;
    }
    const socket = net.connect(socketPath(dir, name));
    let done = false;
    const finish = (err, result) => {
      if (done) return;
      done = true;
      socket.destroy();
      if (err) reject(err);
      else resolve(result);
    };
    if (timeout) {
      socket.setTimeout(timeout, () => {
        finish(new CommandError(`${JSON.stringify(name)} did not answer within ${timeout} ms`));
      });
    }
    socket.on('connect', () => socket.write(encode({ id: 1, cmd, args })));
    socket.on('error', (err) => finish(connectionError(err, name)));
    socket.on('close', () => {
      finish(new CommandError(`${JSON.stringify(name)} closed the connection without answering`));
    });
    readLines(socket, (res) => {
      if (res.ok) finish(null, res.result);
      else finish(new CommandError(`${cmd} ${name}: ${res.error ? res.error.message : 'refused'}`));
    }, (err) => finish(new CommandError(`${JSON.stringify(name)}: ${err.message}`)));
  });
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor(s / 3600) % 24).padStart(2, '0')}h`;
}

function bytes(n) {
  if (n == null) return '-';
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)}K`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)}M`;
  return `${(n / 1024 ** 3).toFixed(2)}G`;
}

function table(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

const cpuSeconds = (w) => (w.cpu ? w.cpu.user + w.cpu.system : null);

// CPU is the seconds used so far; given the previous frame (`last`: pid →
// { cpu, at }), the share of one CPU since then, as `pm2 monit` shows it.
function cpuCell(w, last, at) {
  const now = cpuSeconds(w);
  if (now === null) return '-';
  const before = last && last.get(w.pid);
  if (!before) return `${now.toFixed(2)}s`;
  return `${Math.round((100 * (now - before.cpu)) / Math.max(0.001, (at - before.at) / 1000))}%`;
}

function statusTable(st, last, at) {
  const rows = st.workers.sort((a, b) => a.slot - b.slot || a.id - b.id).map((w) => [
    w.slot, w.id, w.pid, w.state, duration(w.uptime), w.restarts, bytes(w.rss), cpuCell(w, last, at), w.handoffs,
  ]);
  const head = `${st.name} (primary pid ${st.primary.pid}, ${st.totals.workers} workers, ` +
    `${bytes(st.totals.rss)}, ${st.totals.restarts} restarts${st.stopping ? ', stopping' : ''})`;
  return `${head}\n${table(['SLOT', 'ID', 'PID', 'STATE', 'UPTIME', 'RESTARTS', 'MEMORY', 'CPU', 'HANDOFFS'], rows)}`;
}

const out = (text) => process.stdout.write(`${text}\n`);
// Exactly cluster.stats()'s fields.
const statsJson = (st) => JSON.stringify({ workers: st.workers, totals: st.totals, primary: st.primary });

async function ls(flags) {
  const dir = privateHome();
  const apps = [];
  for (const name of dir ? listNames(dir) : []) {
    try {
      apps.push(await request(name, 'info', {}, { timeout: QUICK_MS, dir }));
    } catch {
      // A stale socket (its CLI died): the next CLI of that name replaces it.
    }
  }
  if (flags.json) return out(JSON.stringify(apps));
  if (apps.length === 0) return out('no apps running');
  const now = Date.now();
  out(table(['NAME', 'PID', 'WORKERS', 'UPTIME', 'APP'],
    apps.map((a) => [a.name, a.pid, a.workers, duration(now - a.startedAt),
      a.app + (a.stopping ? ' (stopping)' : '')])));
}

async function status(name, flags) {
  if (!flags.watch) {
    const st = await request(name, 'status', {}, { timeout: QUICK_MS });
    if (flags.json) out(statsJson(st));
    else out(statusTable(st));
    return;
  }
  // Redraws in place on a terminal (frames one after another otherwise),
  // until SIGINT or until the app is gone.
  const tty = process.stdout.isTTY;
  let stop = false;
  let wake = null;
  process.on('SIGINT', () => {
    stop = true;
    if (wake) wake();
  });
  let seen = false;
  let last = null;
  while (!stop) {
    let st;
    try {
      st = await request(name, 'status', {}, { timeout: QUICK_MS });
    } catch (err) {
      if (!seen) throw err;
      out(`${name} is no longer running`);
      return;
    }
    seen = true;
    const at = Date.now();
    const frame = flags.json ? statsJson(st) : statusTable(st, last, at);
    last = new Map(st.workers.filter((w) => w.cpu).map((w) => [w.pid, { cpu: cpuSeconds(w), at }]));
    process.stdout.write(tty ? `\x1b[H\x1b[J${frame}\n` : `${frame}\n\n`);
    let timer;
    await new Promise((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, WATCH_MS);
    });
    clearTimeout(timer);
  }
}

// argv after the command word. Returns { name, n, flags }.
function parseCommandArgs(cmd, argv) {
  const flags = {};
  const positional = [];
  const allowed = { ls: ['--json'], status: ['--json', '--watch'] }[cmd] || [];
  for (const a of argv) {
    if (a.startsWith('--') && allowed.includes(a)) flags[a.slice(2)] = true;
    // A negative number is a bad N (scale web -1), not an option.
    else if (a.startsWith('-') && a !== '-' && !/^-[0-9]/.test(a)) throw new UsageError(`${cmd}: unknown option ${a}`);
    else positional.push(a);
  }
  const want = { ls: 0, status: 1, reload: 1, stop: 1, scale: 2 }[cmd];
  if (positional.length < want) throw new UsageError(`${cmd} needs ${cmd === 'scale' ? 'NAME and N' : 'NAME'}`);
  if (positional.length > want) throw new UsageError(`${cmd}: unexpected argument ${JSON.stringify(positional[want])}`);
  const name = want ? parseName(cmd, positional[0]) : undefined;
  const n = cmd === 'scale' ? parseCount(cmd, positional[1], { min: 1, max: MAX_INSTANCES }) : undefined;
  return { name, n, flags };
}

// Runs a command; resolves once its output is written, rejects with a
// UsageError or CommandError.
async function runCommand(cmd, argv) {
  const { name, n, flags } = parseCommandArgs(cmd, argv);
  switch (cmd) {
    case 'ls': return ls(flags);
    case 'status': return status(name, flags);
    case 'reload': {
      const r = await request(name, 'reload');
      return out(`${name}: reloaded ${r.workers} workers`);
    }
    case 'scale': {
      const r = await request(name, 'scale', { n });
      return out(`${name}: ${r.workers} workers`);
    }
    case 'stop':
      await request(name, 'stop');
      return out(`${name}: stopped`);
    default:
      throw new UsageError(`no such command ${JSON.stringify(cmd)}`);
  }
}

module.exports = { COMMANDS, runCommand, CommandError };
