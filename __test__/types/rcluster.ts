// rcluster by package name (through package.json, as users import it): the Worker type is the one fork() returns,
// in every import style, and rcluster's additions sit on node:cluster's types.
import cluster = require('rcluster');
import type { Worker } from 'rcluster';
import interop, { Worker as WorkerClass } from 'rcluster';
import type * as NodeCluster from 'node:cluster';

const w: Worker = cluster.fork();
const same: cluster.Worker = w;
const viaInterop: WorkerClass = interop.fork();
if (viaInterop instanceof cluster.Worker && w instanceof WorkerClass) void [w.slot, viaInterop.slot];
const slot: number | undefined = w.slot;
const state: string = w.state;
w.kill(9);

// An rcluster worker and cluster are node:cluster's, where code expects those.
const nodeWorker: NodeCluster.Worker = w;
const nodeCluster: NodeCluster.Cluster = cluster;
const nodeSettings: NodeCluster.ClusterSettings = cluster.settings;
void [same, slot, state, nodeWorker, nodeCluster, nodeSettings];

// Chained listeners keep rcluster's type.
cluster
  .on('fork', (worker) => void worker.slot)
  .on('restarting', (worker, delayMs) => void [worker.slot, delayMs])
  .once('crashloop', (worker, info) => void [worker.id, info.crashes])
  .prependListener('unresponsive', (worker, silentMs) => void [worker.id, silentMs])
  .addListener('recycle', (worker, reason) => void [worker.id, reason])
  .reload({ killTimeout: 1000 });
w.on('online', () => {}).disconnect().slot;
const live: Worker | undefined = cluster.workers?.[w.id];
void live;
cluster.setupPrimary({ cwd: new URL('file:///srv/'), stdio: 'inherit', restart: true });
const restart = cluster.settings.restart;
void restart;

// Listener parameters come from the event map. (An annotated listener that disagrees still compiles, as with
// node:cluster's types: it matches the `(event: string, listener: (...args: any[]) => void)` overload.)
cluster.on('recycle', (worker, reason) => {
  // @ts-expect-error a recycle reason is 'memory' or 'age'
  const r: 'oom' = reason;
  void [worker, r];
});
cluster.on('restarting', (worker, delayMs) => {
  // @ts-expect-error restarting's delay is a number
  const d: string = delayMs;
  void [worker, d];
});
// @ts-expect-error a slot is a number
const badSlot: string | undefined = w.slot;
// @ts-expect-error shutdown's timeout is a number
void cluster.shutdown({ timeout: '5s' });
void badSlot;

// Background failures reach 'error' on the cluster, with the slot when there is one.
cluster.on('error', (err) => void [err.message, err.code, err.slot]);
