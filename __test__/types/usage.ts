// Compiled with `tsc --noEmit --strict` by `npm test`: the published types
// accept ordinary cluster code and rcluster's additions, and reject misuse.
import cluster = require('../../index.js');
import * as http from 'node:http';

if (cluster.isPrimary) {
  cluster.setupPrimary({
    exec: 'worker.js',
    args: ['--port', '3000'],
    silent: true,
    serialization: 'advanced',
    restart: { initialDelay: 100, maxRestarts: 5 },
    hangTimeout: 5000,
    maxMemory: '512M',
    maxAge: 3_600_000,
    signals: true,
    killTimeout: 30_000,
    sticky: 'ip',
  });
  cluster.schedulingPolicy = cluster.SCHED_REUSEPORT;
  const w = cluster.fork({ ROLE: 'web' });
  const id: number = w.id;
  const pid: number | undefined = w.process.pid;
  w.on('listening', (address) => {
    const port: number = address.port;
    void port;
  });
  w.on('exit', (code, signal) => {
    // As @types/node types them.
    const c: number = code;
    const s: string = signal;
    void c;
    void s;
  });
  w.send({ hello: 'world' }, (err) => { if (err) throw err; });
  cluster.on('exit', (worker, code) => { if (!worker.exitedAfterDisconnect && code !== 0) cluster.fork(); });
  cluster.on('crashloop', (worker, info) => { const slot: number = info.slot; void slot; void worker; });
  cluster.on('unresponsive', (worker, silentMs: number) => { void worker; void silentMs; });
  cluster.on('recycle', (worker, reason) => { const r: 'memory' | 'age' = reason; void r; void worker; });
  const reloaded: Promise<void> = cluster.reload({ readyTimeout: 10_000 });
  const scaled: Promise<number> = cluster.scale(4);
  const stopped: Promise<void> = cluster.shutdown({ timeout: 5000 });
  const rss: number = cluster.stats().totals.rss;
  cluster.setupPrimary({ metrics: { host: '0.0.0.0', port: 9100 } });
  cluster.setupPrimary({ metrics: false });
  const metricsPort: number | undefined = cluster.metricsAddress()?.port;
  void metricsPort;
  const { stalls, stalledTaken } = cluster.stats().totals;
  const stallCounts: [number, number] = [stalls, stalledTaken];
  void stallCounts;
  // @ts-expect-error a metrics endpoint needs a port
  cluster.setupPrimary({ metrics: { host: '127.0.0.1' } });
  cluster.mirrorToNodeCluster();
  void id; void pid; void reloaded; void scaled; void stopped; void rss;
  cluster.on('exit', (worker, code) => {
    // The event map types the listener: `code` is a number or null.
    const c: number | null = code;
    void c;
    // @ts-expect-error not a string
    const s: string = code;
    void s;
  });
  // @ts-expect-error scale takes a number
  void cluster.scale('4');
  // @ts-expect-error unknown serialization
  cluster.setupPrimary({ serialization: 'xml' });
  // @ts-expect-error sticky is 'ip' (or false)
  cluster.setupPrimary({ sticky: 'cookie' });
} else {
  http.createServer((req, res) => res.end(`${cluster.worker?.id}`)).listen(3000);
}
