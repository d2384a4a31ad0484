'use strict';
// The primary bench/profile-rr.sh profiles: 2 workers, one HTTP server on
// 127.0.0.1:$PORT, SCHED_RR; M=node runs node:cluster instead. Prints `ready`
// once both listen; exits after $LIFE ms.
const cluster = process.env.M === 'node' ? require('node:cluster') : require('..');
const http = require('node:http');

const port = Number(process.env.PORT);
if (cluster.isPrimary) {
  cluster.schedulingPolicy = cluster.SCHED_RR;
  for (let i = 0; i < 2; i++) cluster.fork();
  let listening = 0;
  cluster.on('listening', () => { if (++listening === 2) console.log('ready', process.pid); });
  setTimeout(() => process.exit(0), Number(process.env.LIFE || 30000));
} else {
  http.createServer((req, res) => res.end('hello world\n')).listen({ port, host: '127.0.0.1', backlog: 1024 });
}
