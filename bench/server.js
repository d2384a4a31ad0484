'use strict';
// The server side of the benchmark: one process tree per (config, round).
//
// Started by bench/run.js with child_process.fork() (an IPC channel to the
// runner) and these variables:
//   BENCH_MODE      rcluster | node | node-reuseport | single
//                   | node-sticky-session | node-socketio-sticky (the sticky workload's routers)
//   BENCH_STICKY    ip: rcluster's `sticky: 'ip'`; any value: answers name the worker (x-worker)
//   BENCH_PORT      port to listen on (127.0.0.1 only)
//   BENCH_WORKERS   number of workers (cluster modes)
//   BENCH_SLOW      1 in this many requests burns BENCH_SLOW_MS of CPU (0: never)
//   BENCH_BUSY      1: once the counts are reset (right before the measured
//                   run), the primary blocks its event loop 1 s every 2 s
//   BENCH_STALL     1: once the counts are reset, the first worker blocks its
//                   event loop 200 ms every 1 s
//   NODE_CLUSTER_SCHED_POLICY  rr | none | reuseport, read by the cluster module
//
// Workers count the requests they serve. The runner talks to the primary:
//   -> {type:'reset'}   every worker zeroes its count     <- {type:'reset'}
//   -> {type:'counts'}  every live worker reports         <- {type:'counts', counts:{id:requests}, conns:{id:connections}}
// and on start the primary reports {type:'ready', primaryPid, workers:[{id,pid}]}.
// The runner kills the whole process group when it is done, so nothing here
// needs to shut down gracefully; a primary whose runner goes away exits.

const nodeCluster = require('node:cluster');
const http = require('node:http');

const mode = process.env.BENCH_MODE || 'single';
const port = Number(process.env.BENCH_PORT);
const host = '127.0.0.1';
const workerCount = Number(process.env.BENCH_WORKERS || 2);
const slowEvery = Number(process.env.BENCH_SLOW || 0);
const slowMs = Number(process.env.BENCH_SLOW_MS || 20);
const busy = process.env.BENCH_BUSY === '1';
const stall = process.env.BENCH_STALL === '1';
const sticky = process.env.BENCH_STICKY || '';
// The sticky workload's routers that pass connections from the primary's JS.
const routed = mode === 'node-sticky-session' || mode === 'node-socketio-sticky';
const REPLY_TIMEOUT_MS = 5000;

const BODY = 'hello world\n';

function burn(ms) {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

// The HTTP server every worker (or the single process) runs. Returns a getter
// and a reset for the served-request count.
function serve(listenOptions, onListening) {
  let served = 0;
  let conns = 0;
  const sids = new Set();
  const server = http.createServer((req, res) => {
    served++;
    if (slowEvery > 0 && served % slowEvery === 0) burn(slowMs);
    const headers = { 'Content-Type': 'text/plain', 'Content-Length': BODY.length };
    if (sticky) headers['X-Worker'] = nodeCluster.worker ? nodeCluster.worker.id : 0;
    // What socket.io's engine tells @socket.io/sticky when a session opens.
    const sid = mode === 'node-socketio-sticky' && /sid=([\w-]{20})/.exec(req.url);
    if (sid && !sids.has(sid[1])) {
      sids.add(sid[1]);
      process.send({ type: 'sticky:connection', data: sid[1] });
    }
    res.writeHead(200, headers);
    res.end(BODY);
  });
  server.keepAliveTimeout = 30000;
  server.on('connection', () => { conns++; });
  server.on('error', (err) => {
    console.error(`bench server ${process.pid}: ${err.stack || err}`);
    process.exit(1);
  });
  if (mode === 'node-sticky-session') {
    require('sticky-session').listen(server, port);
    setImmediate(onListening);
  } else if (mode === 'node-socketio-sticky') {
    // @socket.io/sticky's setupWorker, without socket.io: take the
    // connection and the first chunk the primary read.
    process.on('message', (m, socket) => {
      if (!m || m.type !== 'sticky:connection' || !socket) return;
      server.emit('connection', socket);
      socket.unshift(Buffer.from(m.data));
    });
    setImmediate(onListening);
  } else {
    server.listen(listenOptions, onListening);
  }
  return { count: () => served, conns: () => conns, reset: () => { served = 0; conns = 0; } };
}

function listenOptions() {
  const opts = { port, host, backlog: 1024 };
  if (mode === 'node-reuseport') {
    // Every worker binds its own SO_REUSEPORT socket (Node >= 22.12 / 23.1).
    opts.reusePort = true;
    opts.exclusive = true;
  }
  return opts;
}

let stalling = null;

function runWorker() {
  // Told from the listen callback: with `exclusive` (node reusePort) the
  // worker binds by itself and the cluster emits no 'listening'.
  const counter = serve(listenOptions(), () => process.send({ cmd: 'bench-listening' }));
  process.on('message', (m) => {
    if (!m || typeof m !== 'object') return;
    if (m.cmd === 'bench-count') process.send({ cmd: 'bench-count', seq: m.seq, n: counter.count(), c: counter.conns() });
    else if (m.cmd === 'bench-reset') { counter.reset(); process.send({ cmd: 'bench-reset', seq: m.seq }); }
    else if (m.cmd === 'bench-stall' && !stalling) stalling = setInterval(() => burn(200), 1000);
  });
}

function runSingle() {
  const counter = serve(listenOptions(), () => {
    process.send({ type: 'ready', primaryPid: process.pid, workers: [{ id: 0, pid: process.pid }] });
  });
  process.on('message', (m) => {
    if (m && m.type === 'counts') process.send({ type: 'counts', counts: { 0: counter.count() }, conns: { 0: counter.conns() } });
    else if (m && m.type === 'reset') { counter.reset(); process.send({ type: 'reset' }); }
  });
  process.on('disconnect', () => process.exit(0));
}

function runPrimary(cluster) {
  let seq = 0;
  let busyTimer = null;
  // Sends `cmd` to every live worker; resolves with {id: reply} (missing ids
  // did not answer in time, e.g. a killed worker).
  function ask(cmd) {
    const s = ++seq;
    const workers = Object.values(cluster.workers).filter((w) => w.isConnected());
    return new Promise((resolve) => {
      const replies = {};
      let pending = workers.length;
      const listeners = [];
      const finish = () => {
        clearTimeout(timer);
        for (const [w, fn] of listeners) w.removeListener('message', fn);
        resolve(replies);
      };
      const timer = setTimeout(finish, REPLY_TIMEOUT_MS);
      if (pending === 0) return finish();
      for (const w of workers) {
        const fn = (m) => {
          if (!m || m.cmd !== cmd || m.seq !== s) return;
          replies[w.id] = m;
          if (--pending === 0) finish();
        };
        listeners.push([w, fn]);
        w.on('message', fn);
        try { w.send({ cmd, seq: s }); } catch { pending--; }
      }
    });
  }

  process.on('message', async (m) => {
    if (!m) return;
    if (m.type === 'counts') {
      const replies = await ask('bench-count');
      const counts = {};
      const conns = {};
      for (const [id, r] of Object.entries(replies)) { counts[id] = r.n; conns[id] = r.c; }
      process.send({ type: 'counts', counts, conns });
    } else if (m.type === 'reset') {
      await ask('bench-reset');
      process.send({ type: 'reset' });
      // The reset comes right before the measured run: the primary's
      // JavaScript is stuck 1 s out of every 2 s from 200 ms into it.
      if (stall) workers[0].send({ cmd: 'bench-stall' });
      if (busy && !busyTimer) {
        busyTimer = setTimeout(function block() {
          busyTimer = setTimeout(block, 2000);
          burn(1000);
        }, 200);
      }
    }
  });
  process.on('disconnect', () => {
    for (const w of Object.values(cluster.workers)) {
      try { w.process.kill('SIGKILL'); } catch { /* gone */ }
    }
    process.exit(0);
  });

  const workers = [];
  if (mode === 'node-sticky-session') {
    // It forks the workers itself, once it listens (on every address).
    require('sticky-session').listen(http.createServer(), port, { workers: workerCount });
    cluster.on('fork', (w) => workers.push(w));
  } else {
    if (mode === 'node-socketio-sticky') {
      cluster.setupPrimary({ serialization: 'advanced' }); // as @socket.io/sticky asks
      const front = http.createServer();
      require('@socket.io/sticky').setupMaster(front, { loadBalancingMethod: 'least-connection' });
      front.listen(port, host);
    }
    if (mode === 'rcluster' && sticky === 'ip') cluster.setupPrimary({ sticky: 'ip' });
    for (let i = 0; i < workerCount; i++) workers.push(cluster.fork());
  }
  let listening = 0;
  cluster.on('message', (worker, m) => {
    if (!m || m.cmd !== 'bench-listening' || ++listening !== workerCount) return;
    process.send({
      type: 'ready',
      primaryPid: process.pid,
      policy: cluster.schedulingPolicy,
      workers: workers.map((w) => ({ id: w.id, pid: w.process.pid })),
    });
  });
  cluster.on('exit', (w, code, signal) => {
    if (listening < workerCount) {
      console.error(`bench primary: worker ${w.id} exited before listening (${signal || code})`);
      process.exit(1);
    }
  });
}

if (nodeCluster.isWorker) {
  runWorker();
} else if (mode === 'single') {
  runSingle();
} else if (mode === 'rcluster') {
  runPrimary(require('..'));
} else if (mode === 'node' || mode === 'node-reuseport' || routed) {
  runPrimary(nodeCluster);
} else {
  console.error(`bench server: unknown BENCH_MODE ${mode}`);
  process.exit(2);
}
