'use strict';
// The ipc workload's process tree: a primary that forks one worker, which
// echoes every message back. One tree per (config, case, round).
//
// Started by bench/run.js with child_process.fork() (an IPC channel to the
// runner) and these variables:
//   BENCH_MODE           rcluster | node
//   BENCH_SERIALIZATION  json | advanced (cluster.setupPrimary's option)
//   BENCH_BYTES          size of a message's JSON text (the advanced frames carry the same object)
//   BENCH_INFLIGHT       messages in flight: the primary sends one more for every echo
//   BENCH_MESSAGES       measured echoes
//   BENCH_WARMUP         echoes before the measured ones (not counted)
//   BENCH_CAP_MS         the measured run stops here, done or not
//
// Once its worker is online the primary reports {type:'ready', primaryPid,
// workers:[{id,pid}]}; the runner then sends {type:'result'}, and the primary
// warms up, measures and answers {type:'result', messages, seconds, cpuAllUs,
// cpuJsNs, jsClock, capped}. Then it waits to be killed (the runner kills the
// whole process group); if the runner goes away it exits.

const fs = require('node:fs');
const nodeCluster = require('node:cluster');

function runWorker() {
  process.on('message', (m) => process.send(m));
}

// The main thread's CPU time (the JS thread: its tid is the pid), in ns.
// schedstat counts in ns; stat (the fallback) in 10-ms ticks.
const JS_TASK = `/proc/self/task/${process.pid}`;
let jsClock = 'schedstat';
function jsThreadNs() {
  if (jsClock === 'schedstat') {
    try {
      return Number(fs.readFileSync(`${JS_TASK}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      jsClock = 'stat';
    }
  }
  const stat = fs.readFileSync(`${JS_TASK}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 1e7; // utime + stime, USER_HZ = 100
}

function message(bytes) {
  // {"p":"xx…"} is 8 bytes of JSON around the string.
  return { p: 'x'.repeat(Math.max(0, bytes - 8)) };
}

function runPrimary(cluster) {
  const serialization = process.env.BENCH_SERIALIZATION || 'json';
  const msg = message(Number(process.env.BENCH_BYTES || 64));
  const inflight = Number(process.env.BENCH_INFLIGHT || 1);
  const measured = Number(process.env.BENCH_MESSAGES || 10000);
  const warmup = Number(process.env.BENCH_WARMUP || 0);
  const capMs = Number(process.env.BENCH_CAP_MS || 10000);

  process.on('disconnect', () => {
    for (const w of Object.values(cluster.workers)) {
      try { w.process.kill('SIGKILL'); } catch { /* gone */ }
    }
    process.exit(0);
  });

  cluster.setupPrimary({ serialization });
  const worker = cluster.fork();
  worker.on('exit', (code, signal) => {
    console.error(`bench ipc primary: worker exited (${signal || code})`);
    process.exit(1);
  });

  // Sends `total` messages, at most `inflight` unanswered at a time; resolves
  // with the echoes received when all are back or at `deadline` (ms epoch).
  function pump(total, deadline) {
    return new Promise((resolve) => {
      let sent = 0;
      let received = 0;
      let timer = null;
      const finish = (capped) => {
        clearTimeout(timer);
        worker.removeListener('message', onEcho);
        resolve({ received, capped });
      };
      const onEcho = () => {
        received++;
        if (received === total) return finish(false);
        if (sent < total) { sent++; worker.send(msg); }
      };
      worker.on('message', onEcho);
      timer = setTimeout(() => finish(true), Math.max(0, deadline - Date.now()));
      while (sent < Math.min(inflight, total)) { sent++; worker.send(msg); }
    });
  }

  async function measure() {
    if (warmup > 0) {
      // Echoes left over from a capped warm-up would count in the measured run.
      const w = await pump(warmup, Date.now() + capMs);
      if (w.capped) {
        console.error(`bench ipc primary: warm-up of ${warmup} echoes not done in ${capMs} ms`);
        process.exit(1);
      }
    }
    const cpu0 = process.cpuUsage();
    const js0 = jsThreadNs();
    const t0 = process.hrtime.bigint();
    const { received, capped } = await pump(measured, Date.now() + capMs);
    const t1 = process.hrtime.bigint();
    const js1 = jsThreadNs();
    const cpu = process.cpuUsage(cpu0);
    process.send({
      type: 'result',
      messages: received,
      seconds: Number(t1 - t0) / 1e9,
      cpuAllUs: cpu.user + cpu.system,
      cpuJsNs: js1 - js0,
      jsClock,
      capped,
    });
  }

  let started = false;
  process.on('message', (m) => {
    if (m && m.type === 'result' && !started) { started = true; measure(); }
  });
  worker.once('online', () => {
    process.send({ type: 'ready', primaryPid: process.pid, workers: [{ id: worker.id, pid: worker.process.pid }] });
  });
}

if (nodeCluster.isWorker) {
  runWorker();
} else if (process.env.BENCH_MODE === 'rcluster') {
  runPrimary(require('..'));
} else if (process.env.BENCH_MODE === 'node') {
  runPrimary(nodeCluster);
} else {
  console.error(`bench ipc: unknown BENCH_MODE ${process.env.BENCH_MODE}`);
  process.exit(2);
}
