// node:cluster code in an ES module (see interop.ts for how it is compiled).
import cluster, { Worker, type Address, type ClusterSettings } from 'cluster-under-test';
import type { ChildProcess } from 'node:child_process';
import * as http from 'node:http';

// `Worker` is the cluster's Worker (a class and a type), not the DOM's or worker_threads'.
const w: Worker = cluster.fork();
const proc: ChildProcess = w.process;
const pid: number | undefined = w.process.pid;
if (w instanceof Worker) w.send('hello');
w.on('exit', (code: number, signal: string) => void [code, signal]);
w.on('listening', (address: Address) => {
  const host: string = address.address;
  void host;
});
w.on('message', (message) => {
  if (message === 'ping') w.send('pong');
});

if (cluster.isPrimary) {
  cluster.on('exit', (worker, code, signal) => {
    const c: number = code;
    const s: string = signal;
    console.log(`worker ${worker.process.pid} exited`, c, s);
  });
  const settings: ClusterSettings = { exec: 'worker.mjs', args: ['--port', '8000'] as readonly string[], silent: true };
  cluster.setupPrimary(settings);
  for (const id in cluster.workers) cluster.workers?.[id]?.send('hi');
} else if (cluster.isWorker) {
  http.createServer((req, res) => res.end(`${cluster.worker?.id}`)).listen(8000);
}
void [proc, pid, cluster.isMaster, cluster.settings.exec];
