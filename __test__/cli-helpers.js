'use strict';
// Helpers of the cli-*.test.js files: run the real CLI as a child process,
// wait for its output, talk to its app over HTTP. Every child and every worker
// pid the CLI reports is killed after the file's tests, even on failure.

const { after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('./helpers');

const cli = path.join(__dirname, '..', 'bin', 'rcluster.js');
const children = new Set();
const workerPids = new Set();
const dirs = new Set();

after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const pid of workerPids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

// A temp dir (removed after the file's tests); mode 0755 so that another
// user can reach what is inside it, and it is our 0700 home that stops them.
function tempDir(prefix = 'rcluster-cli-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(d, 0o755);
  dirs.add(d);
  return d;
}

// The home of a CLI run without one: never the user's own $RCLUSTER_HOME.
let defaultHome;
const homeOr = (home) => home || defaultHome || (defaultHome = path.join(tempDir('rcluster-home-'), 'home'));

// Runs the CLI in the background. `until(pattern, n, stream)` resolves with the
// first n lines of stream ('stderr' by default) matching pattern. With
// `unreadStdout`, nothing reads the CLI's stdout: the test reads child.stdout.
function runCli(args, { env = {}, cwd, home, unreadStdout = false } = {}) {
  const child = spawn(process.execPath, [cli, ...args], {
    cwd,
    env: { ...process.env, RCLUSTER_HOME: homeOr(home), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const text = { stdout: '', stderr: '' };
  const waiters = new Set();
  for (const name of unreadStdout ? ['stderr'] : ['stdout', 'stderr']) {
    child[name].on('data', (d) => {
      text[name] += d;
      for (const m of text[name].matchAll(/pid"?:? ?(\d+)/g)) workerPids.add(Number(m[1]));
      for (const w of [...waiters]) w();
    });
  }
  const exited = new Promise((resolve) => child.on('close', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
    for (const w of [...waiters]) w(true);
  }));
  const until = (pattern, n = 1, stream = 'stderr', ms = 20000) => new Promise((resolve, reject) => {
    const check = (closed) => {
      const hits = text[stream].split('\n').filter((l) => pattern.test(l));
      if (hits.length >= n || closed) {
        waiters.delete(check);
        clearTimeout(timer);
        if (hits.length >= n) resolve(hits);
        else reject(new Error(`CLI exited before ${pattern} x${n}; ${stream}:\n${text[stream]}\n${text.stderr}`));
      }
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`timed out waiting for ${pattern} x${n} on ${stream}:\n${text[stream]}\n${text.stderr}`));
    }, ms);
    waiters.add(check);
    check();
  });
  return { child, until, exited, text };
}

// Runs the CLI to completion (within `timeout` ms). `options` go to execFile.
function runToExit(args, { home, env = {}, timeout = 20000, ...options } = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], {
      timeout, env: { ...process.env, RCLUSTER_HOME: homeOr(home), ...env }, ...options,
    }, (err, stdout, stderr) => {
      for (const m of stdout.matchAll(/"pid":(\d+)/g)) workerPids.add(Number(m[1]));
      resolve({ code: err ? err.code : 0, signal: err ? err.signal : null, stdout, stderr });
    });
  });
}

// Stops a CLI of runCli as a user would (SIGTERM, or `signal`) and checks that
// it exits 0 within `ms`; its stderr is in the failure's message.
async function stopCli(run, { signal = 'SIGTERM', ms = 20000 } = {}) {
  run.child.kill(signal);
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(resolve, ms, 'still running'); });
  const ended = await Promise.race([run.exited, late]).finally(() => clearTimeout(timer));
  assert.deepEqual(ended, { code: 0, signal: null }, `after ${signal}; stderr:\n${run.text.stderr}`);
  return ended;
}

function get(port, urlPath = '/') {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; }).on('end', () => resolve({ status: res.statusCode, body }));
    }).on('timeout', function onTimeout() {
      this.destroy(new Error(`no answer from port ${port} in 5 s`));
    }).on('error', reject);
  });
}

async function statusJson(name, home) {
  const r = await runToExit(['status', name, '--json'], { home });
  if (r.code !== 0) throw new Error(`status ${name}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

module.exports = { cli, tempDir, freePort, runCli, runToExit, stopCli, get, statusJson, workerPids };
