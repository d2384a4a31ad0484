'use strict';
// The primary (and workers) that bench/reliability.js drives. Commands come as
// lines on stdin, answers go as JSON lines on stdout.
//
//   node bench/reliability-primary.js [workers]
//   env CRASH_AT_START=1: workers exit(1) as soon as they are online (restart churn)
const cluster = require('..');
const http = require('node:http');
const fs = require('node:fs');
const readline = require('node:readline');

if (cluster.isWorker) {
  if (process.env.CRASH_AT_START) {
    process.exit(1);
  }
  // Connections this worker has accepted and not finished: what dies with it.
  let open = 0;
  const server = http.createServer((req, res) => res.end('ok'));
  server.on('connection', (socket) => {
    open++;
    socket.on('close', () => { open--; });
  });
  server.listen(Number(process.env.PORT || 0), '127.0.0.1');
  process.on('message', (m) => {
    if (m !== 'inflight?') return;
    // Report, then freeze: nothing is accepted or answered after the count,
    // so it is exactly what the SIGKILL that follows can lose.
    process.send({ inflight: open });
    for (;;);
  });
  return;
}

const count = Number(process.argv[2] || 2);
cluster.setupPrimary({
  restart: process.env.CRASH_AT_START
    ? { initialDelay: 0, maxDelay: 1, maxRestarts: 1e9, window: 1 }
    : { initialDelay: 10, maxDelay: 200, maxRestarts: 1e6, window: 1000 },
});
let forks = 0;
cluster.on('fork', () => { forks++; });
for (let i = 0; i < count; i++) cluster.fork();

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

function zombies() {
  let n = 0;
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === process.pid && fields[0] === 'Z') n++;
    } catch {
      // raced with an exit
    }
  }
  return n;
}

function health() {
  const workers = Object.values(cluster.workers).filter((w) => !w.isDead());
  return {
    fds: fs.readdirSync('/proc/self/fd').length,
    rss: process.memoryUsage().rss,
    zombies: zombies(),
    workers: workers.length,
    listening: workers.filter((w) => w.state === 'listening').length,
    slots: [...new Set(workers.map((w) => w.slot))].sort(),
    forks,
    pids: workers.map((w) => w.process.pid),
  };
}

let port = 0;
cluster.on('listening', (w, a) => {
  if (!port) {
    port = a.port;
    out({ port });
  }
});

async function killRandom() {
  const live = Object.values(cluster.workers).filter((w) => w.state === 'listening');
  if (!live.length) return out({ killed: null });
  const w = live[Math.floor(Math.random() * live.length)];
  const inflight = await new Promise((resolve) => {
    const t = setTimeout(() => resolve(0), 1000);
    w.once('message', (m) => { clearTimeout(t); resolve(m.inflight || 0); });
    w.send('inflight?');
  });
  w.process.kill('SIGKILL');
  out({ killed: w.id, inflight });
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const [cmd] = line.trim().split(' ');
  if (cmd === 'health') out(health());
  else if (cmd === 'kill') await killRandom();
  else if (cmd === 'reload') {
    const started = Date.now();
    await cluster.reload();
    out({ reloaded: Date.now() - started });
  } else if (cmd === 'quit') {
    await cluster.shutdown();
    process.exit(0);
  }
});
