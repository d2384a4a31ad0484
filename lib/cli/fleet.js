'use strict';
// Runs the apps of an ecosystem file: one foreground CLI (one primary, one
// control socket) per app, as child processes of this one. Their lines are
// relayed whole, so two apps' output never mixes mid-line; signals are passed
// on; this process exits once all are gone, with the worst exit code.
// Each app's CLI also holds the read end of a pipe whose only write end is
// here: if this process dies without passing a signal on (SIGKILL, a crash),
// the pipe ends and the app stops its workers instead of outliving us.

const { spawn } = require('node:child_process');
const { relayLines, gate, settled } = require('./logs');

const CLI = require.resolve('../../bin/rcluster.js');
const FORWARDED = ['SIGTERM', 'SIGINT', 'SIGHUP'];
// Names the fd on which an app's CLI watches for this runner's end.
const FLEET_FD_ENV = 'RCLUSTER_FLEET_FD';

function runFleet(apps, { say }) {
  const children = new Set();
  let worst = 0;
  // One gate per sink, shared by every app: all pause while it is full.
  const toStdout = gate(process.stdout);
  const toStderr = gate(process.stderr);
  for (const app of apps) {
    const child = spawn(process.execPath, [...app.nodeArgs, CLI, ...app.argv], {
      cwd: app.cwd,
      env: { ...process.env, ...app.env, [FLEET_FD_ENV]: '3' },
      stdio: ['inherit', 'pipe', 'pipe', 'pipe'],
    });
    // Never written: its end is the message.
    child.stdio[3].on('error', () => {});
    children.add(child);
    relayLines(child.stdout, process.stdout, toStdout);
    relayLines(child.stderr, process.stderr, toStderr);
    child.on('error', (err) => say(`${app.name}: ${err.message}`));
    child.on('close', (code, signal) => {
      children.delete(child);
      if (code !== 0) say(`${app.name} exited (${signal || `code ${code}`})`);
      worst = Math.max(worst, code === null ? 1 : code);
      if (children.size === 0) settled().then(() => process.exit(worst));
    });
  }
  for (const sig of FORWARDED) {
    process.on(sig, () => {
      for (const c of children) c.kill(sig);
    });
  }
}

// In an app's CLI: calls `gone()` once the runner that started it has ended.
// The variable is dropped so the app's workers do not inherit it.
function watchRunner(gone) {
  const fd = Number(process.env[FLEET_FD_ENV]);
  delete process.env[FLEET_FD_ENV];
  if (!Number.isInteger(fd) || fd < 3) return;
  const net = require('node:net');
  let pipe;
  try {
    pipe = new net.Socket({ fd, readable: true, writable: false });
  } catch {
    return;
  }
  pipe.on('error', () => {});
  pipe.on('close', () => {
    // Our stdout and stderr were pipes to the runner too: writing to them
    // now fails with EPIPE, which must not end the process mid-stop.
    process.stdout.on('error', () => {});
    process.stderr.on('error', () => {});
    gone();
  });
  pipe.resume();
  // The workers keep the CLI alive, not this pipe.
  pipe.unref();
}

module.exports = { runFleet, watchRunner };
