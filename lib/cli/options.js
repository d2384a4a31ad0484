'use strict';
// The options of `rcluster [options] app [args…]`, one row per flag: adding a
// flag is adding a row (and a line of USAGE). Parsing never exits: a bad
// command line throws a UsageError, which bin/rcluster.js prints as one line.

const path = require('node:path');
// The library's own bounds, loaded only to check a run's flags: the commands
// (ls, status…) load no native code.
const limits = () => require('../supervisor').limits;

// More workers than this is a typo (`-i 100000`), not a deployment: each one is
// a whole Node process (tens of MB of RSS, its own V8 heap and pipes), so 1024
// is already far past what one host runs usefully. A fixed cap, unlike one tied
// to the CPU count, keeps a command line valid on every machine it is copied to.
const MAX_INSTANCES = 1024;
const DURATION_UNITS = { ms: 1, s: 1000, m: 60 * 1000, h: 60 * 60 * 1000 };
const SIZE_UNITS = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
const LOG_FORMATS = ['prefix', 'json', 'raw'];
// App names become file names in RCLUSTER_HOME: no slashes, no dot files.
const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

class UsageError extends Error {}

const fail = (message) => { throw new UsageError(message); };

// A count as typed: decimal digits only (no sign, 0x, 1e3 or spaces), from min to max, or `word` itself
// ('max') where one is allowed. The one check of -i, --max-restarts and `scale NAME N`.
function parseCount(what, v, { min = 0, max, word } = {}) {
  if (word !== undefined && v === word) return word;
  if (!/^[0-9]+$/.test(v)) fail(`${what}: ${JSON.stringify(v)} is not a whole number${word ? ` or '${word}'` : ''}`);
  const n = Number(v);
  if (n < min || n > max) fail(`${what}: ${v} is out of range (${min} to ${max}${word ? `, or ${word}` : ''})`);
  return n;
}

const parseInstances = (what, v) => parseCount(what, v, { min: 1, max: MAX_INSTANCES, word: 'max' });

function parseDuration(flag, v, max, min = 1) {
  const m = /^([0-9]+)(ms|s|m|h)?$/.exec(v);
  if (!m) fail(`${flag}: ${JSON.stringify(v)} is not a duration (use e.g. 5000, 30s, 10m)`);
  const n = Number(m[1]) * DURATION_UNITS[m[2] || 'ms'];
  if (n < min || n > max) fail(`${flag}: ${v} is out of range (${min}ms to ${max}ms)`);
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

function parseName(flag, v) {
  if (!NAME_RE.test(v)) fail(`${flag}: ${JSON.stringify(v)} is not a name (letters, digits, _ . -; at most 64)`);
  return v;
}

function oneOf(choices) {
  return (flag, v) => {
    const list = choices.length === 1 ? choices[0] : `${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}`;
    if (!choices.includes(v)) fail(`${flag}: ${JSON.stringify(v)} is not ${list}`);
    return v;
  };
}

function parseMetrics(flag, v) {
  const hostPort = require('../metrics').parseHostPort(v);
  if (!hostPort) fail(`${flag}: ${JSON.stringify(v)} is not [host:]port (port 0 to 65535)`);
  return hostPort;
}

// flags, the opts key, and how to read the value (none: a boolean switch).
const OPTIONS = [
  { flags: ['-i', '--instances'], key: 'instances', parse: parseInstances },
  { flags: ['--name'], key: 'name', parse: parseName },
  { flags: ['--restart'], key: 'restart' },
  { flags: ['--restart-delay'], key: 'restartDelay', parse: (f, v) => parseDuration(f, v, limits().MAX_MS, 0) },
  { flags: ['--max-restarts'], key: 'maxRestarts',
    parse: (f, v) => parseCount(f, v, { max: limits().MAX_RESTARTS }) },
  { flags: ['--min-uptime'], key: 'minUptime', parse: (f, v) => parseDuration(f, v, limits().MAX_MS, 0) },
  { flags: ['--hang-timeout'], key: 'hangTimeout', parse: (f, v) => parseDuration(f, v, limits().MAX_MS) },
  { flags: ['--max-memory'], key: 'maxMemory', parse: parseSize },
  { flags: ['--max-age'], key: 'maxAge', parse: (f, v) => parseDuration(f, v, limits().MAX_MS) },
  { flags: ['--kill-timeout'], key: 'killTimeout', parse: (f, v) => parseDuration(f, v, limits().MAX_TIMER_MS) },
  { flags: ['--listen-timeout'], key: 'listenTimeout', parse: (f, v) => parseDuration(f, v, limits().MAX_TIMER_MS) },
  { flags: ['--policy'], key: 'policy', parse: oneOf(['reuseport', 'rr', 'none']) },
  { flags: ['--log-format'], key: 'logFormat', parse: oneOf(LOG_FORMATS) },
  { flags: ['--metrics'], key: 'metrics', parse: parseMetrics },
  { flags: ['--sticky'], key: 'sticky', parse: oneOf(['ip']) },
  { flags: ['-q', '--quiet'], key: 'quiet' },
];

// The one lookup of a flag, typed or written as an ecosystem key (lib/cli/ecosystem.js).
const optionByFlag = (flag) => OPTIONS.find((o) => o.flags.includes(flag));

const USAGE = `Usage: rcluster [options] app [args…]      run app in the foreground
       rcluster [options] FILE.config.js      run the apps of an ecosystem file
       rcluster ls [--json] | status NAME [--json] [--watch] | reload NAME | scale NAME N | stop NAME

Runs app on several workers sharing its listening sockets. app is found the
way \`node app\` finds it (app.js, app/index.js, app/package.json "main"…).
A first argument that is exactly a command word (ls, status, reload, scale,
stop, start) is a command: run a file named like one as ./stop or start stop.

Options:
  -i, --instances N|max  number of workers, 1 to ${MAX_INSTANCES} (default: max = CPUs
                         allowed by affinity and the container's CPU quota)
      --name NAME        the app's name for commands (default: app's base name)
      --restart          restart crashed workers (exponential backoff, stops
                         on a crash loop)
      --restart-delay T  with --restart: the first delay (default 100ms),
                         doubling up to 10s
      --max-restarts N   with --restart: more crashes than N within a minute
                         are a crash loop (default 10)
      --min-uptime T     with --restart: a worker up this long resets the
                         backoff (default 10s)
      --hang-timeout T   replace a worker whose event loop is silent this long
      --max-memory SIZE  replace a worker whose RSS exceeds SIZE
      --max-age T        replace a worker older than T
      --kill-timeout T   grace period for workers to exit (default 10s,
                         at most 24 days), then SIGKILL
      --listen-timeout T how long a reload or scale waits for a new worker to
                         listen (default 30s)
      --policy P         reuseport (default on Linux), rr or none
      --log-format F     worker output: prefix (default, "[name slot] line"),
                         json (one object per line) or raw (untouched)
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
greater than 0 (--restart-delay, --min-uptime, --max-restarts may be 0).
Invalid options exit 2.

Control sockets live in $RCLUSTER_HOME (default $XDG_RUNTIME_DIR/rcluster,
else ~/.rcluster). Signals: SIGHUP reloads the workers one by one without
dropping connections; SIGTERM and SIGINT stop them gracefully and exit 0.`;

// The file `node app` would run, checked before any worker starts so a typo
// is one line here rather than a MODULE_NOT_FOUND stack per worker.
function resolveApp(app, cwd = process.cwd()) {
  const file = path.resolve(cwd, app);
  try {
    require.resolve(file);
  } catch (err) {
    if (err.code === 'MODULE_NOT_FOUND') fail(`cannot find app ${JSON.stringify(app)} (looked for ${file})`);
    fail(`cannot load app ${JSON.stringify(app)}: ${String(err.message).split('\n')[0]}`);
  }
  return file;
}

// Returns { opts, rest }: what the flags said, and the arguments from the app on.
// `help`/`version` are reported as opts.help/opts.version for the caller.
function parseFlags(argv) {
  const opts = { instances: 'max', restart: false, quiet: false, logFormat: 'prefix' };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') return { opts: { help: true }, rest: [] };
    if (a === '-v' || a === '--version') return { opts: { version: true }, rest: [] };
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    const option = optionByFlag(a);
    if (!option) fail(`unknown option ${a} (rcluster --help lists them)`);
    if (!option.parse) {
      opts[option.key] = true;
    } else {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      opts[option.key] = option.parse(a, argv[++i]);
    }
  }
  return { opts, rest: argv.slice(i) };
}

// An app name from its file: app.js → app, app/index.js → app.
function defaultName(file, given) {
  const base = path.basename(file).replace(/\.[cm]?js$/, '');
  const name = base === 'index' ? path.basename(path.dirname(file)) : base;
  const cleaned = (given || name).replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[.-]+/, '').slice(0, 64);
  return cleaned || 'app';
}

module.exports = {
  OPTIONS, USAGE, MAX_INSTANCES, UsageError, parseFlags, resolveApp, defaultName, parseName, parseCount, optionByFlag,
};
