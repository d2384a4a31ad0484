// Ordinary node:cluster code, CommonJS with esModuleInterop. Compiled twice with `--strict`: with
// 'cluster-under-test' mapped to node:cluster (tsconfig.node.json: the code is valid there) and to rcluster
// (tsconfig.json: so it is valid with rcluster too), and so again with node10 resolution (tsconfig.node10*.json).
// Every file in compat/ is compiled so (the configs include the folder); nothing here may be rcluster-only.
import cluster, { Worker, type Address, type ClusterSettings } from 'cluster-under-test';
import type { ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import { availableParallelism } from 'node:os';

// The HTTP server of the cluster docs: a worker per CPU, each serving on one port.
if (cluster.isPrimary) {
  console.log(`primary ${process.pid}`);
  for (let i = 0; i < availableParallelism(); i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} exited: ${signal || code}`);
  });
} else {
  http.createServer((req, res) => {
    res.writeHead(200);
    res.end('hello\n');
  }).listen(8000);
}

const isPrimary: boolean = cluster.isPrimary;
const isMaster: boolean = cluster.isMaster;
const isWorker: boolean = cluster.isWorker;
void [isPrimary, isMaster, isWorker];

// The named Worker is the type fork() returns, a class, and node:cluster's Worker.
const w: Worker = cluster.fork();
const w2: Worker = cluster.fork({ PORT: 3000, ROLE: 'web' });
if (w2 instanceof Worker) w2.kill();
const proc: ChildProcess = w.process;
const pid: number | undefined = w.process.pid;
const id: number = w.id;
const chained: Worker = w.disconnect();
const afterDisconnect: boolean = w.exitedAfterDisconnect;
const dead: boolean = w.isDead() && !w.isConnected();
void [proc, pid, id, chained, afterDisconnect, dead];
w.kill('SIGKILL');
w.destroy();

// Listeners with the parameter types node:cluster declares, annotated and contextual.
cluster.on('exit', (worker: Worker, code: number, signal: string) => {
  if (!worker.exitedAfterDisconnect && code !== 0 && signal !== 'SIGTERM') cluster.fork();
});
cluster.on('exit', (worker, code, signal) => {
  const c: number = code;
  const s: string = signal;
  const wid: number = worker.id;
  void [c, s, wid];
});
cluster.once('listening', (worker, address) => {
  const host: string = address.address;
  const port: number = address.port;
  const family: 4 | 6 | -1 | 'udp4' | 'udp6' = address.addressType;
  void [worker, host, port, family];
});
cluster.addListener('fork', (worker) => void worker.id);
cluster.prependListener('online', (worker) => void worker.id);
cluster.prependOnceListener('disconnect', (worker) => void worker.id);
cluster.on('setup', (settings: ClusterSettings) => void settings.exec);
cluster.on('message', (worker, message, handle) => {
  if (handle instanceof net.Socket) handle.end();
  void [worker, message];
});
w.on('exit', (code: number, signal: string) => void (code + signal.length));
w.on('exit', (code, signal) => {
  const c: number = code;
  const s: string = signal;
  void [c, s];
});
w.on('listening', (address: Address) => void address.port);
w.once('online', () => {});
w.on('disconnect', () => {});
w.on('error', (err: Error) => void err.message);
w.on('message', (message: any, handle: net.Socket | net.Server) => {
  if (message === 'ping') w.send('pong');
  void handle;
});
w.on('some-custom-event', (...args: any[]) => void args);

// send(), with and without a handle and options.
const server = net.createServer();
w.send({ cmd: 'hello' });
w.send({ cmd: 'hello' }, (err) => { if (err) throw err; });
w.send('server', server);
w.send('socket', new net.Socket(), { keepOpen: true }, (err: Error | null) => void err);

// The live workers.
for (const wid in cluster.workers) {
  const worker = cluster.workers?.[wid];
  worker?.send('hi');
}
const workers = cluster.workers;
if (workers) for (const wid in workers) workers[wid]!.send('hi');
const first: Worker | undefined = cluster.workers?.[1];
const all: Worker[] = Object.values(cluster.workers ?? {}).filter((x): x is Worker => x !== undefined);
const self: Worker | undefined = cluster.worker;
void [first, all, self];

// Settings.
cluster.setupPrimary({ exec: 'worker.js', args: ['--use', 'https'], silent: true });
const args: readonly string[] = ['--port', '3000'];
cluster.setupPrimary({ args, execArgv: ['--max-old-space-size=512'], serialization: 'advanced', cwd: '/srv' });
cluster.setupPrimary({ stdio: ['inherit', 'pipe', 'pipe', 'ipc'], inspectPort: () => 9229, windowsHide: true });
cluster.setupMaster({ exec: 'worker.js' });
cluster.setupPrimary();
const settings: ClusterSettings = cluster.settings;
const exec: string | undefined = cluster.settings.exec;
const settingArgs: readonly string[] | undefined = settings.args;
void [exec, settingArgs];
cluster.schedulingPolicy = cluster.SCHED_RR;
cluster.schedulingPolicy = cluster.SCHED_NONE;
const policy: number = cluster.schedulingPolicy;
void policy;

cluster.disconnect(() => console.log('all disconnected'));
cluster.disconnect();

// Wrong use is wrong with both.
// @ts-expect-error an id is a number
const badId: string = w.id;
// @ts-expect-error unknown serialization
cluster.setupPrimary({ serialization: 'xml' });
void badId;
