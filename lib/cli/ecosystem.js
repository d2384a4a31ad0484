'use strict';
// Ecosystem files: PM2's (`ecosystem.config.js` and the like, PM2 key names)
// and rcluster's own (`rcluster.config.js`, the CLI's option names). Each app
// becomes a command line of this CLI, checked by the same parser as typed
// flags; the runner (lib/cli/fleet.js) starts one foreground CLI per app,
// because node:cluster has one primary per process.

const fs = require('node:fs');
const path = require('node:path');
const { cpuCount } = require('../cpus');
const { OPTIONS, UsageError, parseFlags, resolveApp, defaultName, optionByFlag, MAX_INSTANCES } = require('./options');

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

// Every ecosystem key rcluster reads, one row each. A row is the CLI option the
// key sets (by its opts key in OPTIONS; `value` turns PM2's value into the
// flag's), another spelling of a key (`same`), a key of the app's launch read
// by appsOf (`launch`), a value that must be what rcluster does anyway
// (`check`: the warning otherwise), or a key with nothing to do (`ignore`).
const PM2_KEYS = {
  name: { option: 'name' },
  instances: { option: 'instances', value: instancesOf },
  max_memory_restart: { option: 'maxMemory' },
  kill_timeout: { option: 'killTimeout' },
  listen_timeout: { option: 'listenTimeout' },
  exp_backoff_restart_delay: { option: 'restartDelay' },
  // PM2's delay is fixed; rcluster's doubles from there (see docs/MIGRATING.md).
  restart_delay: { option: 'restartDelay' },
  max_restarts: { option: 'maxRestarts' },
  min_uptime: { option: 'minUptime' },
  log_type: { option: 'logFormat', value: (v) => (v === 'json' ? 'json' : undefined) },
  exec: { same: 'script' },
  interpreterArgs: { same: 'interpreter_args' },
  exec_interpreter: { same: 'interpreter' },
  script: { launch: true },
  args: { launch: true },
  cwd: { launch: true },
  env: { launch: true },
  node_args: { launch: true },
  interpreter_args: { launch: true },
  autorestart: { launch: true }, // PM2 restarts by default
  port: { launch: true }, // it is env.PORT
  exec_mode: {
    check: (v) => /^cluster(?:_mode)?$/.test(String(v)),
    warning: (v) => `exec_mode ${JSON.stringify(v)}: rcluster always runs cluster mode`,
  },
  interpreter: {
    check: (v) => /(?:^|\/)node$/.test(String(v)),
    warning: (v) => `interpreter ${JSON.stringify(v)}: rcluster runs Node only (ignored)`,
  },
  // Worker output is one stream here already: the workers' logs are merged.
  merge_logs: { ignore: true },
  combine_logs: { ignore: true },
};

// rcluster.config.js: the CLI's long option names, kebab or camel case, and these.
const NATIVE_LAUNCH_KEYS = ['script', 'args', 'cwd', 'env', 'nodeArgs'];

// The one reading of an ecosystem key: its row as above ({ key } added: the
// key it stands for, itself unless it is another spelling), or null for a key
// rcluster does not know. A native file's options are rows { option }.
function resolveKey(key, native) {
  if (native) {
    if (NATIVE_LAUNCH_KEYS.includes(key)) return { key, launch: true };
    const kebab = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    const option = optionByFlag(kebab);
    return option ? { key, option: option.key } : null;
  }
  if (!Object.hasOwn(PM2_KEYS, key)) return null;
  const row = PM2_KEYS[key];
  return row.same ? { ...PM2_KEYS[row.same], key: row.same } : { ...row, key };
}

// The app with each key in the spelling its row stands for; where both
// spellings are given, the key's own wins.
function canonical(app, native) {
  const entries = Object.entries(app).filter(([, value]) => value !== undefined);
  const out = {};
  for (const [key, value] of entries) {
    const row = resolveKey(key, native);
    if (row && row.key !== key) out[row.key] = value;
  }
  for (const [key, value] of entries) {
    const row = resolveKey(key, native);
    if (!row || row.key === key) out[key] = value;
  }
  return out;
}

// The flags an option's value is: a switch is true or false; a value false is
// the option left unset.
function optionFlags(row, value, key) {
  const option = OPTIONS.find((o) => o.key === row.option);
  const flag = option.flags.at(-1);
  const v = row.value ? row.value(value) : value;
  if (!option.parse) {
    if (typeof v !== 'boolean') throw new UsageError(`${key} must be true or false`);
    return v ? [flag] : [];
  }
  return v === undefined || v === false ? [] : [flag, String(v)];
}

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
      app = canonical(app, native);
      if (typeof app.script !== 'string' || !app.script) throw new UsageError('has no script');
      const flags = [];
      for (const [key, value] of Object.entries(app)) {
        const row = resolveKey(key, native);
        if (!row) {
          warnOnce(key, native ? `${path.basename(abs)}: ignoring unknown key ${JSON.stringify(key)}`
            : `${path.basename(abs)}: rcluster does not support ${key} (ignored; see docs/MIGRATING.md)`);
        } else if (row.option) {
          flags.push(...optionFlags(row, value, key));
        } else if (row.check && !row.check(value)) {
          warnOnce(key, row.warning(value));
        }
      }
      if (!native && app.autorestart !== false) flags.push('--restart');
      const cwd = path.resolve(path.dirname(abs), app.cwd == null ? '.' : String(app.cwd));
      const script = resolveApp(app.script, cwd);
      const args = words(app.args, 'args');
      const nodeArgs = native ? words(app.nodeArgs, 'nodeArgs') : [...words(app.node_args, 'node_args'),
        ...words(app.interpreter_args, 'interpreter_args')];
      if (!flags.includes('--name')) flags.push('--name', defaultName(app.script));
      // PM2 starts one instance when `instances` is not given (the CLI's own
      // default is max); options typed before the file, then the app's keys, win.
      const pm2Defaults = !native && app.instances === undefined ? ['--instances', '1'] : [];
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

module.exports = { isEcosystemFile, appsOf, PM2_KEYS, NATIVE_LAUNCH_KEYS, resolveKey };
