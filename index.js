'use strict';
// rcluster: `require('rcluster')` in place of `require('cluster')`.
//
// In the primary this is rcluster's cluster, whose work runs in a Rust core.
// In a worker it is Node's own `cluster`: workers are ordinary Node processes
// running Node's worker-side cluster code.

const nodeCluster = require('node:cluster');

function load() {
  if (nodeCluster.isWorker) return require('./lib/child');
  if (process.platform === 'win32') {
    process.emitWarning('rcluster has no Windows core yet; using node:cluster', {
      code: 'RCLUSTER_FALLBACK',
    });
    return nodeCluster;
  }
  return require('./lib/primary');
}

module.exports = load();
