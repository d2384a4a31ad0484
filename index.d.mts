// ESM types for rcluster: the default export and the named exports of index.mjs.
import cluster = require('./index.js');

export default cluster;
export type {
  Address, ClusterSettings, SetupSettings, MetricsOptions, MetricsAddress, RestartOptions, ReloadOptions,
  ShutdownOptions, WorkerStats, ClusterStats,
  Cluster, WorkerProcess, WorkerEvents, ClusterEvents,
} from './index.js';
/** The Worker class: a value (`instanceof Worker`) and the type of a worker. */
export type Worker = cluster.Worker;
export declare const Worker: cluster.Cluster['Worker'];
/** @deprecated the type of a worker; use `Worker` */
export type WorkerInstance = cluster.Worker;
export declare const isPrimary: boolean;
export declare const isMaster: boolean;
export declare const isWorker: boolean;
export declare const SCHED_NONE: 1;
export declare const SCHED_RR: 2;
export declare const SCHED_REUSEPORT: 3;
export declare const workers: typeof cluster.workers;
export declare const worker: typeof cluster.worker;
export declare const fork: typeof cluster.fork;
export declare const disconnect: typeof cluster.disconnect;
export declare const setupPrimary: typeof cluster.setupPrimary;
export declare const setupMaster: typeof cluster.setupMaster;
export declare const on: typeof cluster.on;
export declare const once: typeof cluster.once;
export declare const off: typeof cluster.off;
