'use strict';
// Worker side. Workers run Node's own cluster code; rcluster adds only a
// heartbeat, when the primary asked for one (hangTimeout): a message from the
// event loop, internal (`NODE_` prefix) so user 'message' handlers never see
// it. A worker whose loop is blocked stops sending and is replaced.
//
// Loaded by `require('rcluster')` in a worker, and preloaded (`-r`) by the CLI
// for apps that never require it.

const cluster = require('node:cluster');

function startHeartbeat() {
  const ms = Number(process.env.RCLUSTER_HEARTBEAT_MS);
  if (!cluster.isWorker || !(ms > 0) || process.__rclusterHeartbeat) return;
  // `lag`: how late this timer fired (ms), i.e. the event loop's delay,
  // reported by the primary's metrics endpoint.
  let last = performance.now();
  const beat = () => {
    const now = performance.now();
    const lag = Math.max(0, Math.round(now - last - ms));
    last = now;
    if (process.connected) process.send({ cmd: 'NODE_RCLUSTER', act: 'heartbeat', lag });
  };
  process.__rclusterHeartbeat = setInterval(beat, ms);
  // The heartbeat must not keep a worker alive that would otherwise exit.
  process.__rclusterHeartbeat.unref();
  beat();
}

startHeartbeat();

module.exports = cluster;
