// Type definitions for rcluster: node:cluster's API, plus rcluster's additions.
//
// Built on @types/node's `node:cluster` types (Worker extends its Worker, Cluster extends its Cluster), so
// code that type-checks against node:cluster type-checks against rcluster: the shapes are the same by
// construction. The reference makes that hold whatever `types` the consumer's tsconfig lists. @types/node is an
// optional peer dependency (">=18"): a TypeScript project for Node has it already; JavaScript users need nothing.

/// <reference types="node" />

import type * as NodeCluster from 'node:cluster';
import type { ChildProcess, StdioOptions } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import type * as net from 'node:net';

/** A worker: node:cluster's Worker, plus rcluster's `slot`. */
declare class RclusterWorker extends NodeCluster.Worker {
  // Node's Worker takes EventEmitter's options, in the types; it reads these.
  constructor(
    options?: { id?: number | undefined; process?: ChildProcess | undefined; state?: string | undefined }
      & ConstructorParameters<typeof EventEmitter>[0],
  );
  /** `'none' | 'online' | 'listening' | 'disconnected' | 'dead'` */
  state: string;
  /** (rcluster, primary only) The worker's slot: 0…n-1, kept by replacements. */
  slot?: number;
  /** Signals the worker's process (default `'SIGTERM'`); a name or a number. */
  kill(signal?: string | number): void;
  destroy(signal?: string | number): void;
}

declare namespace rcluster {
  type Worker = RclusterWorker;

  /** `cluster.settings`: node:cluster's settings, plus rcluster's supervision. */
  interface ClusterSettings extends NodeCluster.ClusterSettings {
    /** Replace crashed workers in the same slot, after a backoff. */
    restart?: boolean | RestartOptions | undefined;
    /** Replace a worker whose heartbeat is silent this long (ms). */
    hangTimeout?: number | undefined;
    /** Replace (gracefully) a worker whose RSS exceeds this: bytes, or `'512M'`. */
    maxMemory?: number | string | undefined;
    /** Replace (gracefully) a worker older than this (ms). */
    maxAge?: number | undefined;
    /** SIGTERM/SIGINT → shutdown() then exit 0; SIGHUP → reload(). */
    signals?: boolean | undefined;
    /**
     * `'ip'`: every TCP connection from one client address reaches the same worker slot (in the kernel under
     * SCHED_REUSEPORT, in the core under SCHED_RR). Refused with SCHED_NONE. Applies to servers opened afterwards.
     */
    sticky?: 'ip' | false | null | undefined;
    /**
     * How long a worker asked to leave may take before SIGKILL (ms): the default of shutdown()'s
     * `timeout` and reload()/scale()'s `killTimeout`, and what a disconnecting worker gets to finish
     * should the primary exit first. Default 10000.
     */
    killTimeout?: number | undefined;
    /**
     * Serve `/metrics` (Prometheus text format), `/healthz` and `/readyz` from the primary's Rust
     * core, on `host` (default `'127.0.0.1'`) and `port` (0: any free port, see
     * {@link Cluster.metricsAddress}). `false` closes it. For a numeric host, setupPrimary() throws
     * what `listen()` would (`EADDRINUSE`, `EACCES`, `EADDRNOTAVAIL`). A host name is resolved in
     * the background, as `listen(port, host)` does: what fails then (`ENOTFOUND`, or the bind's
     * error) is emitted as `'error'` on `cluster` (a process warning when nobody listens).
     */
    metrics?: MetricsOptions | false | null | undefined;
  }

  interface MetricsOptions {
    /** Address to bind. Default `'127.0.0.1'`; `'0.0.0.0'` or `'::'` for every interface. */
    host?: string | undefined;
    port: number;
  }

  /** Where the metrics endpoint listens, as `server.address()` says. */
  interface MetricsAddress {
    address: string;
    family: 'IPv4' | 'IPv6';
    port: number;
  }

  /** What {@link Cluster.setupPrimary} accepts: {@link ClusterSettings}, with `cwd` also a URL and any `stdio`. */
  interface SetupSettings extends Omit<ClusterSettings, 'cwd' | 'stdio'> {
    cwd?: string | URL | undefined;
    /** Workers' stdio; must contain `'ipc'`. Overrides `silent`. */
    stdio?: StdioOptions | undefined;
  }

  interface RestartOptions {
    /** Delay before the first restart (ms). Default 100. */
    initialDelay?: number | undefined;
    /** Cap for the doubling delay (ms). Default 10000. */
    maxDelay?: number | undefined;
    /** Growth per consecutive crash. Default 2. */
    factor?: number | undefined;
    /** A worker that ran this long resets the delay (ms). Default 10000. */
    stableAfter?: number | undefined;
    /** More crashes than this within `window` stop restarts ('crashloop'). Default 10. */
    maxRestarts?: number | undefined;
    /** Default 60000 (ms). */
    window?: number | undefined;
  }

  interface ReloadOptions {
    /** How long a successor may take to listen where its predecessor did (ms). Default 30000. */
    readyTimeout?: number | undefined;
    /** How long a retiring worker may take to exit before SIGKILL (ms). Default: settings.killTimeout. */
    killTimeout?: number | undefined;
  }

  interface ShutdownOptions {
    /** How long workers may take to exit before SIGKILL (ms). Default: settings.killTimeout. */
    timeout?: number | undefined;
  }

  interface WorkerStats {
    id: number;
    pid: number | undefined;
    slot: number;
    state: string;
    /** ms since it was started */
    uptime: number;
    /** restarts of its slot so far */
    restarts: number;
    rss: number | null;
    /** CPU seconds */
    cpu: { user: number; system: number } | null;
    /** connections the primary handed to it (SCHED_RR, drained queues) */
    handoffs: number;
  }

  interface ClusterStats {
    workers: WorkerStats[];
    totals: {
      workers: number; rss: number; cpuUser: number; cpuSystem: number; handoffs: number; restarts: number;
      /** SCHED_REUSEPORT: times a worker's socket was seen stalled and steered away from */
      stalls: number;
      /** SCHED_REUSEPORT: connections the primary took from stalled workers' queues and handed to others */
      stalledTaken: number;
    };
    primary: { pid: number; rss: number | null; cpu: { user: number; system: number } | null };
  }

  /** `address` as reported by the `'listening'` events (as in node:cluster). */
  type Address = NodeCluster.Address;

  /** `worker.process`: the worker's process, typed as node:cluster types it. */
  type WorkerProcess = ChildProcess;

  /** A worker's events and their listeners, as node:cluster types them. */
  interface WorkerEvents {
    disconnect: () => void;
    error: (error: Error) => void;
    exit: (code: number, signal: string) => void;
    listening: (address: Address) => void;
    message: (message: any, handle: net.Socket | net.Server) => void;
    online: () => void;
  }

  /** The cluster's events (node:cluster's, as it types them, then rcluster's) and their listeners. */
  interface ClusterEvents {
    disconnect: (worker: Worker) => void;
    exit: (worker: Worker, code: number, signal: string) => void;
    fork: (worker: Worker) => void;
    listening: (worker: Worker, address: Address) => void;
    message: (worker: Worker, message: any, handle: net.Socket | net.Server) => void;
    online: (worker: Worker) => void;
    setup: (settings: ClusterSettings) => void;
    restarting: (worker: Worker, delayMs: number) => void;
    crashloop: (worker: Worker, info: { slot: number; crashes: number }) => void;
    unresponsive: (worker: Worker, silentMs: number) => void;
    recycle: (worker: Worker, reason: 'memory' | 'age') => void;
    /**
     * A background reload or recycle that failed, a metrics endpoint whose host name did not
     * resolve or whose bind failed after it, or a restart that could not be spawned
     * (`code: 'ERR_RCLUSTER_RESTART'`, with `slot` and the spawn error as `cause`). Emitted only
     * while something listens; otherwise it becomes a process warning.
     */
    error: (error: Error & { code?: string; slot?: number }) => void;
  }

  interface Cluster extends NodeCluster.Cluster {
    /** In a worker: this worker. In the primary: undefined. */
    readonly worker?: Worker | undefined;
    /** Live workers by id (primary only). */
    readonly workers?: NodeJS.Dict<Worker> | undefined;
    readonly settings: ClusterSettings;
    /** One of the SCHED_* constants; set before the first fork()/setupPrimary(). */
    schedulingPolicy: number;
    /** The primary accepts connections (in Rust) and hands them to workers. */
    readonly SCHED_RR: number;
    /** The operating system decides: one socket shared by every worker. */
    readonly SCHED_NONE: number;
    /** (rcluster) A SO_REUSEPORT socket per worker; the kernel spreads connections. Default on Linux. */
    readonly SCHED_REUSEPORT: 3;
    Worker: typeof RclusterWorker;

    setupPrimary(settings?: SetupSettings): void;
    /** @deprecated alias of setupPrimary */
    setupMaster(settings?: SetupSettings): void;
    fork(env?: any): Worker;

    // rcluster's additions: primary only (in a worker, rcluster is node:cluster).
    /** Rolling restart, slot by slot; rejects (old workers kept) if a successor is not ready. */
    reload(options?: ReloadOptions): Promise<void>;
    /** Disconnect every worker; SIGKILL those still running after the timeout. */
    shutdown(options?: ShutdownOptions): Promise<void>;
    /** Start or retire workers until there are `n`; resolves with the count. */
    scale(n: number, options?: ReloadOptions): Promise<number>;
    stats(): ClusterStats;
    /**
     * Where the metrics endpoint (`settings.metrics`) listens; null when there is none, and while
     * its host name is being resolved.
     */
    metricsAddress(): MetricsAddress | null;
    /**
     * Makes `require('node:cluster')` in this primary list rcluster's workers and repeat their
     * events, for libraries that reach workers through node:cluster (prom-client's
     * `AggregatorRegistry`). Not for a primary that also forks with node:cluster.
     */
    mirrorToNodeCluster(): void;

    addListener<E extends keyof ClusterEvents>(event: E, listener: ClusterEvents[E]): this;
    addListener(event: string | symbol, listener: (...args: any[]) => void): this;
    on<E extends keyof ClusterEvents>(event: E, listener: ClusterEvents[E]): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
    once<E extends keyof ClusterEvents>(event: E, listener: ClusterEvents[E]): this;
    once(event: string | symbol, listener: (...args: any[]) => void): this;
    prependListener<E extends keyof ClusterEvents>(event: E, listener: ClusterEvents[E]): this;
    prependListener(event: string | symbol, listener: (...args: any[]) => void): this;
    prependOnceListener<E extends keyof ClusterEvents>(event: E, listener: ClusterEvents[E]): this;
    prependOnceListener(event: string | symbol, listener: (...args: any[]) => void): this;
  }
}

// `default`, as @types/node's node:cluster has: `import * as cluster from 'rcluster'` (esModuleInterop) gives it.
// (`import cluster = require('rcluster')` does not, at runtime, as with node:cluster.)
declare const rcluster: rcluster.Cluster & { readonly default: rcluster.Cluster };
export = rcluster;
