'use strict';
// Opt-in (cluster.mirrorToNodeCluster()): `require('node:cluster')` in this
// primary sees rcluster's workers. Libraries that talk to workers through
// node:cluster in the primary — prom-client's AggregatorRegistry asks each of
// `cluster.workers` for its metrics and collects the answers from the
// cluster's 'message' event — then work unchanged. node:cluster's own
// `workers` object gets rcluster's workers added and removed, and its events
// repeat rcluster's. Not for a primary that also forks with node:cluster
// itself (worker ids would collide).

const nodeCluster = require('node:cluster');

const EVENTS = ['fork', 'online', 'listening', 'message', 'disconnect', 'exit'];

let mirrored = null;

function mirror(cluster) {
  if (mirrored === cluster) return;
  mirrored = cluster;
  const add = (w) => { nodeCluster.workers[w.id] = w; };
  for (const w of Object.values(cluster.workers)) add(w);
  cluster.on('fork', add);
  for (const event of EVENTS) cluster.on(event, (...args) => nodeCluster.emit(event, ...args));
}

// Called wherever rcluster drops a worker from `cluster.workers` (when it is
// disconnected, as in Node, not only at its exit), so both lists agree.
function forget(worker) {
  if (mirrored && nodeCluster.workers[worker.id] === worker) delete nodeCluster.workers[worker.id];
}

module.exports = { mirror, forget };
