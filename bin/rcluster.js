#!/usr/bin/env node
'use strict';
// rcluster CLI: runs an app that knows nothing of clustering on N workers.
//
//   rcluster [-i N|max] [--restart] [--hang-timeout ms] app.js [args…]

const path = require('node:path');
const cluster = require('..');
const { cpuCount } = require('../lib/cpus');
const { version } = require('../package.json');

const USAGE = `Usage: rcluster [options] app.js [args…]

Runs app.js on several workers sharing its listening sockets.

Options:
  -i, --instances N|max  number of workers (default: max = CPUs allowed by
                         affinity and the container's CPU quota)
      --restart          restart crashed workers (exponential backoff, stops
                         on a crash loop)
      --hang-timeout MS  replace a worker whose event loop is silent this long
      --max-memory SIZE  replace a worker whose RSS exceeds SIZE (e.g. 512M)
      --max-age MS       replace a worker older than MS
      --kill-timeout MS  grace period for workers to exit (default 10000)
      --policy P         reuseport (default on Linux), rr or none
  -q, --quiet            no lifecycle lines on stderr
  -h, --help             this text
  -v, --version          rcluster's version

Signals: SIGHUP reloads the workers one by one without dropping connections;
SIGTERM and SIGINT stop them gracefully and exit 0.`;

function fail(message) {
  process.stderr.write(`rcluster: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { instances: 'max', restart: false, killTimeout: 10000, quiet: false };
  const ms = (name, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) fail(`${name} wants a positive number of milliseconds, got ${JSON.stringify(v)}`);
    return n;
  };
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
      const v = value();
      if (v !== 'max' && !(Number.isInteger(Number(v)) && Number(v) > 0)) fail(`-i wants a positive integer or 'max', got ${JSON.stringify(v)}`);
      opts.instances = v;
    } else if (a === '--restart') {
      opts.restart = true;
    } else if (a === '--hang-timeout') {
      opts.hangTimeout = ms(a, value());
    } else if (a === '--max-age') {
      opts.maxAge = ms(a, value());
    } else if (a === '--kill-timeout') {
      opts.killTimeout = ms(a, value());
    } else if (a === '--max-memory') {
      opts.maxMemory = value();
    } else if (a === '--policy') {
      const v = value();
      if (!['rr', 'none', 'reuseport'].includes(v)) fail(`--policy wants rr, none or reuseport, got ${JSON.stringify(v)}`);
      opts.policy = v;
    } else if (a === '-q' || a === '--quiet') {
      opts.quiet = true;
    } else if (a === '--') {
      i++;
      break;
    } else if (a.startsWith('-')) {
      fail(`unknown option ${a}`);
    } else {
      break;
    }
  }
  if (i >= argv.length) fail('no app to run');
  opts.app = path.resolve(argv[i]);
  opts.args = argv.slice(i + 1);
  return opts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const say = opts.quiet ? () => {} : (line) => process.stderr.write(`[rcluster] ${line}\n`);
  const count = opts.instances === 'max' ? cpuCount() : Number(opts.instances);

  if (opts.policy) {
    cluster.schedulingPolicy = { rr: cluster.SCHED_RR, none: cluster.SCHED_NONE, reuseport: cluster.SCHED_REUSEPORT }[opts.policy];
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
    });
  } catch (err) {
    fail(err.message);
  }

  const who = (w) => `worker ${w.id} (pid ${w.process.pid}, slot ${w.slot})`;
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
    cluster.shutdown({ timeout: opts.killTimeout }).then(() => {
      say('all workers stopped');
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    if (stopping) return;
    say('SIGHUP: reloading');
    cluster.reload({ killTimeout: opts.killTimeout }).then(
      () => say('reload complete'),
      (err) => say(`reload stopped, old workers kept: ${err.message}`),
    );
  });

  say(`starting ${count} worker${count === 1 ? '' : 's'} for ${path.relative(process.cwd(), opts.app) || opts.app}`);
  for (let i = 0; i < count; i++) cluster.fork();

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
