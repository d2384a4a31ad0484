// node:cluster code written with `import = require` (see interop.ts for how it is compiled). With @types/node the
// import is the module's namespace, so only its types and the Worker class are used through it.
import cluster = require('cluster-under-test');
import type { Worker, Cluster, ClusterSettings } from 'cluster-under-test';
import type { ChildProcess } from 'node:child_process';

export function supervise(c: cluster.Cluster, settings: cluster.ClusterSettings): cluster.Worker {
  if (c.isPrimary) c.setupPrimary(settings);
  const w: cluster.Worker = c.fork();
  const same: Worker = w;
  const proc: ChildProcess = w.process;
  c.on('exit', (worker: cluster.Worker, code: number, signal: string) => {
    if (code !== 0 && !worker.exitedAfterDisconnect) c.fork();
    void signal;
  });
  w.on('listening', (address: cluster.Address) => {
    const host: string = address.address;
    void host;
  });
  void [same, proc];
  return w;
}

export function isWorker(value: unknown): value is cluster.Worker {
  return value instanceof cluster.Worker;
}

export const asCluster = (c: Cluster): Cluster => c;
export const asSettings = (s: ClusterSettings): ClusterSettings => ({ ...s, args: ['--flag'] as readonly string[] });
