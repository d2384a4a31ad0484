'use strict';
// The foreground supervisor: one app on N workers, its lifecycle lines on
// stderr, its workers' output attributed, and a control socket for commands.

const dns = require('node:dns');
const net = require('node:net');
const path = require('node:path');
const cluster = require('../..');
const { cpuCount } = require('../cpus');
const { version } = require('../../package.json');
const { MAX_INSTANCES } = require('./options');
const { attributeLogs, settled } = require('./logs');
const { ensureHome, socketPath } = require('./home');
const { startControl } = require('./server');
const { watchRunner } = require('./fleet');
const { codes } = require('../errors');
const { validateCount } = require('../validate');

// The tuning flags refine --restart; without it nothing restarts.
function restartOption(opts) {
  if (!opts.restart) return false;
  const r = {};
  if (opts.restartDelay !== undefined) r.initialDelay = opts.restartDelay;
  if (opts.maxRestarts !== undefined) r.maxRestarts = opts.maxRestarts;
  if (opts.minUptime !== undefined) r.stableAfter = opts.minUptime;
  return Object.keys(r).length ? r : true;
}

// A --metrics host name is resolved before the endpoint starts (the library
// would resolve it in the background): one that does not resolve stops the
// CLI, as a port in use does, and the address is known for the 'metrics on' line.
async function resolveHost(metrics) {
  if (!metrics || net.isIP(metrics.host)) return metrics;
  const { address } = await dns.promises.lookup(metrics.host);
  return { ...metrics, host: address };
}

// `say(line)` writes a lifecycle line; `fatal(line)` one line and exit 1.
async function run(opts, { say, fatal }) {
  const count = opts.instances === 'max' ? Math.min(cpuCount(), MAX_INSTANCES) : opts.instances;
  const startedAt = Date.now();
  // How long a reload or scale waits for each new worker to listen (--listen-timeout).
  const readyOptions = opts.listenTimeout ? { readyTimeout: opts.listenTimeout } : undefined;
  let stopping = false;

  if (opts.policy) {
    const policies = { rr: cluster.SCHED_RR, none: cluster.SCHED_NONE, reuseport: cluster.SCHED_REUSEPORT };
    cluster.schedulingPolicy = policies[opts.policy];
  }
  const piped = opts.logFormat !== 'raw';
  try {
    const metrics = await resolveHost(opts.metrics);
    cluster.setupPrimary({
      exec: opts.app,
      args: opts.args,
      // The preload gives apps that never require rcluster a heartbeat.
      execArgv: [...process.execArgv, '-r', require.resolve('../child.js')],
      // Output is read here to be attributed; raw mode leaves it alone.
      stdio: piped ? ['inherit', 'pipe', 'pipe', 'ipc'] : undefined,
      restart: restartOption(opts),
      hangTimeout: opts.hangTimeout,
      maxMemory: opts.maxMemory,
      maxAge: opts.maxAge,
      // The grace of reload and stop, and of leaving workers should the CLI
      // itself be killed meanwhile (default 10 s).
      killTimeout: opts.killTimeout,
      metrics,
      sticky: opts.sticky,
    });
    const m = cluster.metricsAddress();
    if (m) say(`metrics on http://${m.family === 'IPv6' ? `[${m.address}]` : m.address}:${m.port}/metrics`);
  } catch (err) {
    // A bad option is a bad command line (2); a system error (a --metrics
    // port in use) is a failure to run, like a refused command (1).
    fatal(err.message, err.syscall ? 1 : 2);
  }
  if (piped) attributeLogs(cluster, { app: opts.name, format: opts.logFormat });

  const stop = (why) => {
    if (stopping) return cluster.shutdown();
    stopping = true;
    say(`${why}: shutting down`);
    return cluster.shutdown().then(() => {
      say('all workers stopped');
      // The workers' last lines first (bounded), then, on the next turn, the
      // answer to a `stop` command.
      return settled();
    }).then(() => {
      setImmediate(() => process.exit(0));
    });
  };
  const reload = () => {
    if (stopping) return Promise.reject(codes.ERR_RCLUSTER_STOPPING());
    return cluster.reload(readyOptions);
  };

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

  // Started by an ecosystem runner that has since died (SIGKILL): stop too.
  watchRunner(() => stop('the ecosystem runner is gone'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    if (stopping) return;
    say('SIGHUP: reloading');
    reload().then(
      () => say('reload complete'),
      (err) => say(`reload stopped, old workers kept: ${err.message}`),
    );
  });

  let control;
  try {
    control = await startControl({
      file: socketPath(ensureHome(), opts.name),
      name: opts.name,
      handlers: {
        info: () => ({
          name: opts.name, pid: process.pid, app: opts.app, version, startedAt,
          workers: Object.keys(cluster.workers).length, stopping,
        }),
        status: () => ({ name: opts.name, pid: process.pid, stopping, ...cluster.stats() }),
        reload: async () => {
          say('reload requested: reloading');
          try {
            await reload();
          } catch (err) {
            say(`reload stopped, old workers kept: ${err.message}`);
            throw err;
          }
          say('reload complete');
          return { workers: Object.keys(cluster.workers).length };
        },
        scale: async ({ n }) => {
          // What cluster.scale() refuses, refused in its words; then the CLI's own bounds (0 workers would
          // end the CLI, more than -i takes are a typo), in the same form.
          validateCount(n, 'n');
          validateCount(n, 'n', 1, MAX_INSTANCES);
          if (stopping) throw codes.ERR_RCLUSTER_STOPPING();
          say(`scale to ${n} requested`);
          return { workers: await cluster.scale(n, readyOptions) };
        },
        stop: async () => {
          await stop('stop requested');
          return { stopped: true };
        },
      },
    });
  } catch (err) {
    fatal(err.message);
  }
  say(`control socket ${control.file}`);

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
  // a restart is pending; the control socket does not): 1 if workers crashed
  // for good, else 0.
  cluster.on('crashloop', () => { process.exitCode = 1; });
  if (!opts.restart) {
    cluster.on('exit', (w, code, signal) => {
      if (!stopping && !w.exitedAfterDisconnect && (code !== 0 || signal)) process.exitCode = 1;
    });
  }
}

module.exports = { run };
