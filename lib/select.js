'use strict';
// Which implementation `require('rcluster')` gives: Node's own cluster in a
// worker (workers run Node's worker-side code, plus rcluster's heartbeat), a
// warned fallback to node:cluster on Windows (no core there yet), and the
// Rust-backed primary everywhere else.

function select({ platform, isWorker }) {
  if (isWorker) return 'worker';
  if (platform === 'win32') return 'node-fallback';
  return 'primary';
}

module.exports = { select };
