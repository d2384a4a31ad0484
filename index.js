'use strict';
// rcluster: `require('rcluster')` in place of `require('cluster')`.
//
// In the primary this is rcluster's cluster, whose work runs in a Rust core.
// In a worker it is Node's own `cluster`: workers are ordinary Node processes
// running Node's worker-side cluster code.

const nodeCluster = require('node:cluster');
const { select } = require('./lib/select');

switch (select({ platform: process.platform, isWorker: nodeCluster.isWorker })) {
  case 'worker':
    module.exports = require('./lib/child');
    break;
  case 'node-fallback':
    process.emitWarning('rcluster has no Windows core yet; using node:cluster', { code: 'RCLUSTER_FALLBACK' });
    module.exports = nodeCluster;
    break;
  default:
    module.exports = require('./lib/primary');
}
