'use strict';
// Runs the apps of an ecosystem file: one foreground CLI (one primary, one
// control socket) per app, as child processes of this one. Their lines are
// relayed whole, so two apps' output never mixes mid-line; signals are passed
// on; this process exits once all are gone, with the worst exit code.

const { spawn } = require('node:child_process');
const { relayLines, gate, settled } = require('./logs');

const CLI = require.resolve('../../bin/rcluster.js');
const FORWARDED = ['SIGTERM', 'SIGINT', 'SIGHUP'];

function runFleet(apps, { say }) {
  const children = new Set();
  let worst = 0;
  // One gate per sink, shared by every app: all pause while it is full.
  const toStdout = gate(process.stdout);
  const toStderr = gate(process.stderr);
  for (const app of apps) {
    const child = spawn(process.execPath, [...app.nodeArgs, CLI, ...app.argv], {
      cwd: app.cwd,
      env: { ...process.env, ...app.env },
      stdio: ['inherit', 'pipe', 'pipe'],
    });
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

module.exports = { runFleet };
