// ESM entry: `import cluster from 'rcluster'` or named imports.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const cluster = require('./index.js');

export default cluster;
export const {
  isPrimary, isMaster, isWorker, Worker, SCHED_NONE, SCHED_RR,
} = cluster;
// rcluster's additions are undefined in a worker (there it is node:cluster).
export const SCHED_REUSEPORT = cluster.SCHED_REUSEPORT ?? 3;
// Objects that are never replaced stay live through named imports.
export const workers = cluster.workers;
// Functions are bound so they work without `cluster.` in front.
const bind = (name) => (typeof cluster[name] === 'function' ? cluster[name].bind(cluster) : undefined);
export const fork = bind('fork');
export const disconnect = bind('disconnect');
export const setupPrimary = bind('setupPrimary');
export const setupMaster = bind('setupMaster');
export const on = bind('on');
export const once = bind('once');
export const off = bind('off');
// `worker` (in a worker) and `settings` change over time: read them from the
// default export.
export const worker = cluster.worker;
