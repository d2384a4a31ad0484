'use strict';
// Ecosystem files: PM2's (`ecosystem.config.js` and the like, PM2 key names)
// and rcluster's own (`rcluster.config.js`, the CLI's option names). Each app
// becomes a command line of this CLI, checked by the same parser as typed
// flags; the runner (lib/cli/fleet.js) starts one foreground CLI per app,
// because node:cluster has one primary per process.

const fs = require('node:fs');
const path = require('node:path');
const { cpuCount } = require('../cpus');
const { OPTIONS, UsageError, parseFlags, resolveApp, defaultName, MAX_INSTANCES } = require('./options');

function isEcosystemFile(arg) {
  return /\.config\.(?:c?js|json)$/.test(arg) || /\.json$/.test(arg);
}

function isNative(file) {
  return /^rcluster\.config\./.test(path.basename(file));
}

function load(file) {
  let data;
  try {
    data = file.endsWith('.json') ? JSON.parse(fs.readFileSync(file, 'utf8')) : require(file);
  } catch (err) {
    if (err.code === 'ENOENT' || err.code === 'MODULE_NOT_FOUND') {
      throw new UsageError(`cannot find ecosystem file ${file}`);
    }
    throw new UsageError(`cannot load ${file}: ${String(err.message).split('\n')[0]}`);
  }
  const apps = Array.isArray(data) ? data : data && (data.apps || (data.script ? [data] : null));
  if (!Array.isArray(apps) || apps.length === 0) {
    throw new UsageError(`${file} lists no apps (expected { apps: [...] })`);
  }
  return apps;
}

// PM2 takes these as a string (split on spaces) or an array.
function words(value, key) {
  if (value === undefined || value === null) return [];
  const scalar = (v) => typeof v === 'string' || typeof v === 'number';
  if (Array.isArray(value) && value.every(scalar)) return value.map(String);
  if (typeof value === 'string') return value.split(/\s+/).filter(Boolean);
  throw new UsageError(`${key} must be a string or an array of strings`);
}

// PM2's instances: 0 or 'max' = every CPU, -N = every CPU but N.
function instancesOf(value) {
  if (value === undefined) return undefined;
  if (value === 'max' || value === 0 || value === '0') return 'max';
  const n = Number(value);
  if (Number.isInteger(n) && n < 0) return String(Math.min(MAX_INSTANCES, Math.max(1, cpuCount() + n)));
  return String(value);
}

// PM2 key → how it becomes CLI flags (or another part of the app's launch).
const PM2_KEYS = {
  name: (v, f) => f.push('--name', String(v)),
  script: () => {},
  args: () => {},
  cwd: () => {},
  env: () => {},
  node_args: () => {},
  interpreter_args: () => {},
  instances: (v, f) => f.push('-i', instancesOf(v)),
  exec_mode: (v, f, warn) => {
    if (/^cluster(?:_mode)?$/.test(String(v))) return;
    warn('exec_mode', `exec_mode ${JSON.stringify(v)}: rcluster always runs cluster mode`);
  },
  interpreter: (v, f, warn) => {
    if (/(?:^|\/)node$/.test(String(v))) return;
    warn('interpreter', `interpreter ${JSON.stringify(v)}: rcluster runs Node only (ignored)`);
  },
  max_memory_restart: (v, f) => f.push('--max-memory', String(v)),
  kill_timeout: (v, f) => f.push('--kill-timeout', String(v)),
  listen_timeout: (v, f) => f.push('--listen-timeout', String(v)),
  exp_backoff_restart_delay: (v, f) => f.push('--restart-delay', String(v)),
  max_restarts: (v, f) => f.push('--max-restarts', String(v)),
  min_uptime: (v, f) => f.push('--min-uptime', String(v)),
  // PM2's delay is fixed; rcluster's doubles from there (see docs/MIGRATING.md).
  restart_delay: (v, f) => f.push('--restart-delay', String(v)),
  log_type: (v, f) => { if (v === 'json') f.push('--log-format', 'json'); },
  // Worker output is one stream here already: the workers' logs are merged.
  merge_logs: () => {},
  combine_logs: () => {},
  autorestart: () => {}, // below: PM2 restarts by default
  port: () => {}, // below: it is env.PORT
};
// PM2's other spellings of the same keys.
const PM2_ALIASES = { exec: 'script', interpreterArgs: 'interpreter_args', exec_interpreter: 'interpreter' };

// rcluster.config.js: the CLI's long option names, kebab or camel case.
function nativeFlag(key) {
  const kebab = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
  return OPTIONS.find((o) => o.flags.includes(kebab)) ? kebab : null;
}
const NATIVE_LAUNCH_KEYS = ['script', 'args', 'cwd', 'env', 'nodeArgs'];

// Returns [{ name, cwd, env, nodeArgs, argv }] where argv is this CLI's
// command line for the app; `warn(line)` is called once per ignored key.
function appsOf(file, { warn = () => {}, baseFlags = [] } = {}) {
  const abs = path.resolve(file);
  const native = isNative(abs);
  const warned = new Set();
  const warnOnce = (key, line) => {
    if (warned.has(key)) return;
    warned.add(key);
    warn(line);
  };
  const names = new Set();
  return load(abs).map((app, index) => {
    const where = `${path.basename(abs)}: app ${app && app.name ? JSON.stringify(app.name) : index}`;
    try {
      if (!app || typeof app !== 'object') throw new UsageError('is not an object');
      if (!native && app.script === undefined && typeof app.exec === 'string') app = { ...app, script: app.exec };
      if (typeof app.script !== 'string' || !app.script) throw new UsageError('has no script');
      const flags = [];
      for (const [key, value] of Object.entries(app)) {
        if (value === undefined) continue;
        if (native) {
          if (NATIVE_LAUNCH_KEYS.includes(key)) continue;
          const flag = nativeFlag(key);
          if (!flag) warnOnce(key, `${path.basename(abs)}: ignoring unknown key ${JSON.stringify(key)}`);
          else if (value === true) flags.push(flag);
          else if (value !== false) flags.push(flag, String(value));
        } else if (Object.hasOwn(PM2_KEYS, PM2_ALIASES[key] || key)) {
          PM2_KEYS[PM2_ALIASES[key] || key](value, flags, warnOnce);
        } else {
          warnOnce(key, `${path.basename(abs)}: rcluster does not support ${key} (ignored; see docs/MIGRATING.md)`);
        }
      }
      if (!native && app.autorestart !== false) flags.push('--restart');
      const cwd = path.resolve(path.dirname(abs), app.cwd == null ? '.' : String(app.cwd));
      const script = resolveApp(app.script, cwd);
      const args = words(app.args, 'args');
      const nodeArgs = native ? words(app.nodeArgs, 'nodeArgs') : [...words(app.node_args, 'node_args'),
        ...words(app.interpreter_args || app.interpreterArgs, 'interpreter_args')];
      if (!flags.includes('--name')) flags.push('--name', defaultName(app.script));
      // PM2 starts one instance when `instances` is not given (the CLI's own
      // default is max); options typed before the file, then the app's keys, win.
      const pm2Defaults = !native && app.instances === undefined ? ['-i', '1'] : [];
      const argv = [...pm2Defaults, ...baseFlags, ...flags, '--', script, ...args];
      // The same checks a typed command line gets, before any app starts.
      const { opts } = parseFlags(argv);
      if (names.has(opts.name)) throw new UsageError(`the name ${JSON.stringify(opts.name)} is used twice`);
      names.add(opts.name);
      if (app.env != null && typeof app.env !== 'object') throw new UsageError('env must be an object');
      const env = {};
      if (!native && app.port !== undefined) env.PORT = String(app.port);
      for (const [k, v] of Object.entries(app.env || {})) {
        env[k] = typeof v === 'object' ? JSON.stringify(v) : String(v);
      }
      return { name: opts.name, cwd, env, nodeArgs, argv };
    } catch (err) {
      if (err instanceof UsageError) throw new UsageError(`${where}: ${err.message}`);
      throw err;
    }
  });
}

module.exports = { isEcosystemFile, appsOf };
