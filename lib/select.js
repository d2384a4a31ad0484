'use strict';
// Which implementation `require('rcluster')` gives: Node's own cluster in a
// worker (workers run Node's worker-side code, plus rcluster's heartbeat), a
// warned fallback to node:cluster on Windows (no core there yet) and in a
// worker thread, and the Rust-backed primary everywhere else.
//
// Why not in a worker thread: the core, its event pump and the channel
// readers are the process's and live on the main thread's loop; a thread's
// loop must be empty when the thread ends (Node aborts the process if not).

function select({ platform, isWorker, isMainThread = true }) {
  if (isWorker) return 'worker';
  if (platform === 'win32') return 'node-fallback';
  if (!isMainThread) return 'thread-fallback';
  return 'primary';
}

module.exports = { select };
