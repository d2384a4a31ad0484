#!/usr/bin/env node
'use strict';
// rcluster CLI: runs an app that knows nothing of clustering on N workers.
//
//   rcluster [-i N|max] [--restart] [--hang-timeout T] … app [args…]   (see USAGE)

const path = require('node:path');
const cluster = require('..');
const { cpuCount } = require('../lib/cpus');
const { version } = require('../package.json');

// More workers than this is a typo (`-i 100000`), not a deployment: each one is
// a whole Node process (tens of MB of RSS, its own V8 heap and pipes), so 1024
// is already far past what one host runs usefully. A fixed cap, unlike one tied
// to the CPU count, keeps a command line valid on every machine it is copied to.
const MAX_INSTANCES = 1024;
// --kill-timeout is a JS timer (setTimeout fires at once past 2^31-1 ms);
// --hang-timeout and --max-age are timed by the core: the API's own bounds.
const { MAX_TIMER_MS, MAX_MS: MAX_CORE_MS } = require('../lib/supervisor').limits;
const DURATION_UNITS = { ms: 1, s: 1000, m: 60 * 1000, h: 60 * 60 * 1000 };
const SIZE_UNITS = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

const USAGE = `Usage: rcluster [options] app [args…]

Runs app on several workers sharing its listening sockets. app is found the
way \`node app\` finds it (app.js, app/index.js, app/package.json "main"…).

Options:
  -i, --instances N|max  number of workers, 1 to ${MAX_INSTANCES} (default: max = CPUs
                         allowed by affinity and the container's CPU quota)
      --restart          restart crashed workers (exponential backoff, stops
                         on a crash loop)
      --hang-timeout T   replace a worker whose event loop is silent this long
      --max-memory SIZE  replace a worker whose RSS exceeds SIZE
      --max-age T        replace a worker older than T
      --kill-timeout T   grace period for workers to exit (default 10s,
                         at most 24 days), then SIGKILL
      --policy P         reuseport (default on Linux), rr or none
      --metrics [HOST:]PORT  serve /metrics, /healthz and /readyz there
                         (HOST defaults to 127.0.0.1; 0.0.0.0 for all)
      --sticky ip        every connection from one client address reaches the
                         same worker slot (not with --policy none)
  -q, --quiet            no lifecycle lines on stderr
  -h, --help             this text
  -v, --version          rcluster's version

N is a decimal integer. T is a decimal integer of milliseconds, or one with a
unit: 500ms, 30s, 10m, 1h. SIZE is a decimal integer of bytes, or one with a
unit: 512K, 512M, 1G (binary units; KB, MB, GB mean the same). All must be
greater than 0. Invalid options exit 2.

Signals: SIGHUP reloads the workers one by one without dropping connections;
SIGTERM and SIGINT stop them gracefully (also during start-up) and exit 0.`;

// One line on stderr, exit 2: bad command lines name the flag as typed.
function fail(message) {
  process.stderr.write(`rcluster: ${message}\n`);
  process.exit(2);
}

function parseInstances(flag, v) {
  if (v === 'max') return 'max';
  if (!/^[0-9]+$/.test(v)) fail(`${flag}: ${JSON.stringify(v)} is not a whole number or 'max'`);
  const n = Number(v);
  if (n < 1 || n > MAX_INSTANCES) fail(`${flag}: ${v} is out of range (1 to ${MAX_INSTANCES}, or max)`);
  return n;
}

function parseDuration(flag, v, max) {
  const m = /^([0-9]+)(ms|s|m|h)?$/.exec(v);
  if (!m) fail(`${flag}: ${JSON.stringify(v)} is not a duration (use e.g. 5000, 30s, 10m)`);
  const n = Number(m[1]) * DURATION_UNITS[m[2] || 'ms'];
  if (n < 1 || n > max) fail(`${flag}: ${v} is out of range (1ms to ${max}ms)`);
  return n;
}

function parseSize(flag, v) {
  const m = /^([0-9]+)(?:([kmg])b?|b)?$/i.exec(v);
  if (!m) fail(`${flag}: ${JSON.stringify(v)} is not a size (use e.g. 512M, 1G)`);
  const n = Number(m[1]) * SIZE_UNITS[(m[2] || '').toLowerCase()];
  if (n < 1 || n > Number.MAX_SAFE_INTEGER) {
    fail(`${flag}: ${v} is out of range (1 byte to ${Number.MAX_SAFE_INTEGER})`);
  }
  return n;
}

// The file `node app` would run, checked before any worker starts so a typo
// is one line here rather than a MODULE_NOT_FOUND stack per worker. The
// workers still get the path as given, so their process.argv[1] is unchanged.
function checkApp(app) {
  const file = path.resolve(app);
  try {
    require.resolve(file);
  } catch (err) {
    if (err.code === 'MODULE_NOT_FOUND') fail(`cannot find app ${JSON.stringify(app)} (looked for ${file})`);
    fail(`cannot load app ${JSON.stringify(app)}: ${String(err.message).split('\n')[0]}`);
  }
  return file;
}

function parseArgs(argv) {
  const opts = { instances: 'max', restart: false, killTimeout: undefined, quiet: false };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '-h' || a === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (a === '-v' || a === '--version') {
      process.stdout.write(`${version}\n`);
      process.exit(0);
    } else if (a === '-i' || a === '--instances') {
      opts.instances = parseInstances(a, value());
    } else if (a === '--restart') {
      opts.restart = true;
    } else if (a === '--hang-timeout') {
      opts.hangTimeout = parseDuration(a, value(), MAX_CORE_MS);
    } else if (a === '--max-age') {
      opts.maxAge = parseDuration(a, value(), MAX_CORE_MS);
    } else if (a === '--kill-timeout') {
      opts.killTimeout = parseDuration(a, value(), MAX_TIMER_MS);
    } else if (a === '--max-memory') {
      opts.maxMemory = parseSize(a, value());
    } else if (a === '--policy') {
      const v = value();
      if (!['rr', 'none', 'reuseport'].includes(v)) fail(`${a}: ${JSON.stringify(v)} is not reuseport, rr or none`);
      opts.policy = v;
    } else if (a === '--metrics') {
      const v = value();
      opts.metrics = require('../lib/metrics').parseHostPort(v);
      if (!opts.metrics) fail(`${a}: ${JSON.stringify(v)} is not [host:]port (port 0 to 65535)`);
    } else if (a === '--sticky') {
      const v = value();
      if (v !== 'ip') fail(`${a}: ${JSON.stringify(v)} is not ip`);
      opts.sticky = v;
    } else if (a === '-q' || a === '--quiet') {
      opts.quiet = true;
    } else if (a === '--') {
      i++;
      break;
    } else if (a.startsWith('-')) {
      fail(`unknown option ${a} (rcluster --help lists them)`);
    } else {
      break;
    }
  }
  if (i >= argv.length) {
    process.stderr.write(`rcluster: no app to run\n\n${USAGE}\n`);
    process.exit(2);
  }
  opts.app = checkApp(argv[i]);
  opts.args = argv.slice(i + 1);
  return opts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const say = opts.quiet ? () => {} : (line) => process.stderr.write(`[rcluster] ${line}\n`);
  const count = opts.instances === 'max' ? Math.min(cpuCount(), MAX_INSTANCES) : opts.instances;

  if (opts.policy) {
    const policies = { rr: cluster.SCHED_RR, none: cluster.SCHED_NONE, reuseport: cluster.SCHED_REUSEPORT };
    cluster.schedulingPolicy = policies[opts.policy];
  }
  try {
    cluster.setupPrimary({
      exec: opts.app,
      args: opts.args,
      // The preload gives apps that never require rcluster a heartbeat.
      execArgv: [...process.execArgv, '-r', require.resolve('../lib/child.js')],
      restart: opts.restart,
      hangTimeout: opts.hangTimeout,
      maxMemory: opts.maxMemory,
      maxAge: opts.maxAge,
      // The grace of reload and stop, and of leaving workers should the CLI
      // itself be killed meanwhile (default 10 s).
      killTimeout: opts.killTimeout,
      metrics: opts.metrics,
      sticky: opts.sticky,
    });
    const m = cluster.metricsAddress();
    if (m) say(`metrics on http://${m.family === 'IPv6' ? `[${m.address}]` : m.address}:${m.port}/metrics`);
  } catch (err) {
    fail(err.message);
  }

  const who = (w) => `worker ${w.id} (pid ${w.process.pid}, slot ${w.slot})`;
  cluster.on('fork', (w) => say(`${who(w)} forked`));
  cluster.on('online', (w) => say(`${who(w)} online`));
  cluster.on('listening', (w, a) => {
    const where = a.addressType === -1 ? a.address : `${a.address || '*'}:${a.port}`;
    say(`${who(w)} listening on ${where}${typeof a.addressType === 'string' ? ` (${a.addressType})` : ''}`);
  });
  cluster.on('exit', (w, code, signal) => say(`${who(w)} exited (${signal || `code ${code}`})`));
  cluster.on('restarting', (w, delay) => say(`restarting slot ${w.slot} in ${Math.round(delay)} ms`));
  cluster.on('crashloop', (w, info) => {
    say(`slot ${info.slot} crashed ${info.crashes} times within the window: not restarting it`);
  });
  cluster.on('unresponsive', (w, silent) => say(`${who(w)} unresponsive for ${Math.round(silent)} ms: replacing it`));
  cluster.on('recycle', (w, reason) => say(`${who(w)} over its ${reason} limit: replacing it`));
  cluster.on('error', (err) => say(`error: ${err.message}`));

  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: shutting down`);
    cluster.shutdown().then(() => {
      say('all workers stopped');
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    if (stopping) return;
    say('SIGHUP: reloading');
    cluster.reload().then(
      () => say('reload complete'),
      (err) => say(`reload stopped, old workers kept: ${err.message}`),
    );
  });

  say(`starting ${count} worker${count === 1 ? '' : 's'} for ${path.relative(process.cwd(), opts.app) || opts.app}`);
  // One fork per turn of the event loop: a fork takes tens of ms, and a signal
  // that arrives meanwhile must stop the start-up instead of waiting behind it.
  let forked = 0;
  const forkNext = () => {
    if (stopping || forked >= count) return;
    forked++;
    cluster.fork();
    setImmediate(forkNext);
  };
  forkNext();

  // The CLI exits when nothing is left to run (the core keeps it alive while
  // a restart is pending): 1 if workers crashed for good, else 0.
  cluster.on('crashloop', () => { process.exitCode = 1; });
  if (!opts.restart) {
    cluster.on('exit', (w, code, signal) => {
      if (!stopping && !w.exitedAfterDisconnect && (code !== 0 || signal)) process.exitCode = 1;
    });
  }
}

main();
