'use strict';
// rcluster: `require('rcluster')` in place of `require('cluster')`.
//
// In the primary this is rcluster's cluster, whose work runs in a Rust core.
// In a worker it is Node's own `cluster`: workers are ordinary Node processes
// running Node's worker-side cluster code.

const nodeCluster = require('node:cluster');
const { select } = require('./lib/select');

const { isMainThread } = require('node:worker_threads');

switch (select({ platform: process.platform, isWorker: nodeCluster.isWorker, isMainThread })) {
  case 'worker':
    module.exports = require('./lib/child');
    break;
  case 'node-fallback':
    process.emitWarning('rcluster has no Windows core yet; using node:cluster', { code: 'RCLUSTER_FALLBACK' });
    module.exports = nodeCluster;
    break;
  case 'thread-fallback':
    process.emitWarning("rcluster's primary runs on the main thread only; using node:cluster in this worker thread", {
      code: 'RCLUSTER_FALLBACK',
    });
    module.exports = nodeCluster;
    break;
  default:
    try {
      module.exports = require('./lib/primary');
    } catch (err) {
      // No native core for this platform (none is built for it, or it failed
      // to load): run on node:cluster rather than not at all, and say so.
      if (!/rcluster|native binding|\.node/i.test(String(err && err.message))) throw err;
      process.emitWarning(`rcluster's native core could not be loaded (${err.message}); using node:cluster`, {
        code: 'RCLUSTER_FALLBACK',
      });
      module.exports = nodeCluster;
    }
}
