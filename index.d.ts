// Type definitions for rcluster: node:cluster's API, plus rcluster's additions.

/// <reference types="node" />

import { EventEmitter } from 'node:events';
import { ChildProcess, StdioOptions, Serializable, SendHandle, MessageOptions } from 'node:child_process';

declare namespace rcluster {
  /** Settings for {@link Cluster.setupPrimary}; the same as node:cluster's. */
  interface ClusterSettings {
    /** Node options for workers. Default: `process.execArgv`. */
    execArgv?: string[] | undefined;
    /** The worker script. Default: `process.argv[1]`. */
    exec?: string | undefined;
    /** Arguments for the worker script. Default: `process.argv.slice(2)`. */
    args?: string[] | undefined;
    /** Pipe the workers' stdio to the primary (`worker.process.stdout` …). */
    silent?: boolean | undefined;
    /** Workers' stdio; must contain `'ipc'`. Overrides `silent`. */
    stdio?: StdioOptions | undefined;
    uid?: number | undefined;
    gid?: number | undefined;
    cwd?: string | URL | undefined;
    /** Inspector port for each worker (with `--inspect` in execArgv). */
    inspectPort?: number | (() => number) | undefined;
    serialization?: 'json' | 'advanced' | undefined;
    windowsHide?: boolean | undefined;

    // rcluster's supervision (off unless set).
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
     * How long a worker asked to leave may take before SIGKILL (ms): the default of shutdown()'s
     * `timeout` and reload()/scale()'s `killTimeout`, and what a disconnecting worker gets to finish
     * should the primary exit first. Default 10000.
     */
    killTimeout?: number | undefined;
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
    totals: { workers: number; rss: number; cpuUser: number; cpuSystem: number; handoffs: number; restarts: number };
    primary: { pid: number; rss: number | null; cpu: { user: number; system: number } | null };
  }

  /** `address` as reported by the `'listening'` events. */
  interface Address {
    address: string | null;
    port: number;
    /** 4, 6, -1 (Unix socket), 'udp4' or 'udp6'. */
    addressType: 4 | 6 | -1 | 'udp4' | 'udp6';
    fd?: number | undefined;
  }

  /** `worker.process`: behaves like a `ChildProcess` for the worker. */
  interface WorkerProcess extends EventEmitter {
    readonly pid: number | undefined;
    readonly spawnfile: string;
    readonly spawnargs: string[];
    readonly exitCode: number | null;
    readonly signalCode: NodeJS.Signals | null;
    readonly killed: boolean;
    readonly connected: boolean;
    readonly stdin: ChildProcess['stdin'];
    readonly stdout: ChildProcess['stdout'];
    readonly stderr: ChildProcess['stderr'];
    readonly stdio: ChildProcess['stdio'];
    kill(signal?: NodeJS.Signals | number): boolean;
    send(message: Serializable, callback?: (error: Error | null) => void): boolean;
    send(message: Serializable, sendHandle?: SendHandle, callback?: (error: Error | null) => void): boolean;
    send(
      message: Serializable,
      sendHandle?: SendHandle,
      options?: MessageOptions,
      callback?: (error: Error | null) => void,
    ): boolean;
    disconnect(): void;
    ref(): void;
    unref(): void;

    on(event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void): this;
    on(event: 'close', listener: (code: number | null, signal: NodeJS.Signals | null) => void): this;
    on(event: 'disconnect', listener: () => void): this;
    on(event: 'error', listener: (error: Error) => void): this;
    on(event: 'message', listener: (message: any, handle?: SendHandle) => void): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
  }

  /** A worker's events and their listeners. */
  interface WorkerEvents {
    disconnect: () => void;
    error: (error: Error) => void;
    exit: (code: number | null, signal: NodeJS.Signals | null) => void;
    listening: (address: Address) => void;
    message: (message: any, handle?: SendHandle) => void;
    online: () => void;
  }

  /** The cluster's events (Node's, then rcluster's) and their listeners. */
  interface ClusterEvents {
    disconnect: (worker: Worker) => void;
    exit: (worker: Worker, code: number | null, signal: NodeJS.Signals | null) => void;
    fork: (worker: Worker) => void;
    listening: (worker: Worker, address: Address) => void;
    message: (worker: Worker, message: any, handle?: SendHandle) => void;
    online: (worker: Worker) => void;
    setup: (settings: ClusterSettings) => void;
    restarting: (worker: Worker, delayMs: number) => void;
    crashloop: (worker: Worker, info: { slot: number; crashes: number }) => void;
    unresponsive: (worker: Worker, silentMs: number) => void;
    recycle: (worker: Worker, reason: 'memory' | 'age') => void;
  }

  interface Worker extends EventEmitter {
    /** Unique within the primary; starts at 1. */
    id: number;
    /** In the primary, the worker's process; in a worker, `process`. */
    process: WorkerProcess;
    /** `'none' | 'online' | 'listening' | 'disconnected' | 'dead'` */
    state: string;
    /** True after `disconnect()`/`kill()`-initiated exits; false for crashes. */
    exitedAfterDisconnect: boolean;
    /** (rcluster, primary only) The worker's slot: 0…n-1, kept by replacements. */
    slot?: number;
    send(message: Serializable, callback?: (error: Error | null) => void): boolean;
    send(message: Serializable, sendHandle?: SendHandle, callback?: (error: Error | null) => void): boolean;
    send(
      message: Serializable,
      sendHandle?: SendHandle,
      options?: MessageOptions,
      callback?: (error: Error | null) => void,
    ): boolean;
    /** Signals the worker's process (default `'SIGTERM'`). */
    kill(signal?: NodeJS.Signals | number): void;
    destroy(signal?: NodeJS.Signals | number): void;
    /** Closes the worker's servers, then its channel; it then exits by itself. */
    disconnect(): this;
    isConnected(): boolean;
    isDead(): boolean;

    addListener<E extends keyof WorkerEvents>(event: E, listener: WorkerEvents[E]): this;
    addListener(event: string | symbol, listener: (...args: any[]) => void): this;
    on<E extends keyof WorkerEvents>(event: E, listener: WorkerEvents[E]): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
    once<E extends keyof WorkerEvents>(event: E, listener: WorkerEvents[E]): this;
    once(event: string | symbol, listener: (...args: any[]) => void): this;
  }

  interface Cluster extends EventEmitter {
    readonly isPrimary: boolean;
    /** @deprecated alias of isPrimary */
    readonly isMaster: boolean;
    readonly isWorker: boolean;
    /** In a worker: this worker. In the primary: undefined. */
    readonly worker?: Worker | undefined;
    /** Live workers by id (primary only). */
    readonly workers?: NodeJS.Dict<Worker> | undefined;
    readonly settings: ClusterSettings;
    /** One of the SCHED_* constants; set before the first fork()/setupPrimary(). */
    schedulingPolicy: number;
    /** The operating system decides: one socket shared by every worker. */
    readonly SCHED_NONE: 1;
    /** The primary accepts connections (in Rust) and hands them to workers. */
    readonly SCHED_RR: 2;
    /** A SO_REUSEPORT socket per worker; the kernel spreads connections. Default on Linux. */
    readonly SCHED_REUSEPORT: 3;
    Worker: new (options?: { id?: number; process?: WorkerProcess; state?: string }) => Worker;

    setupPrimary(settings?: ClusterSettings): void;

    // rcluster's additions: primary only (in a worker, rcluster is node:cluster).
    /** Rolling restart, slot by slot; rejects (old workers kept) if a successor is not ready. */
    reload(options?: ReloadOptions): Promise<void>;
    /** Disconnect every worker; SIGKILL those still running after the timeout. */
    shutdown(options?: ShutdownOptions): Promise<void>;
    /** Start or retire workers until there are `n`; resolves with the count. */
    scale(n: number, options?: ReloadOptions): Promise<number>;
    stats(): ClusterStats;
    /** @deprecated alias of setupPrimary */
    setupMaster(settings?: ClusterSettings): void;
    fork(env?: NodeJS.ProcessEnv | Record<string, string | number | boolean | undefined>): Worker;
    disconnect(callback?: () => void): void;

    addListener<E extends keyof ClusterEvents>(event: E, listener: ClusterEvents[E]): this;
    addListener(event: string | symbol, listener: (...args: any[]) => void): this;
    on<E extends keyof ClusterEvents>(event: E, listener: ClusterEvents[E]): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
    once<E extends keyof ClusterEvents>(event: E, listener: ClusterEvents[E]): this;
    once(event: string | symbol, listener: (...args: any[]) => void): this;
  }
}

declare const rcluster: rcluster.Cluster;
export = rcluster;
