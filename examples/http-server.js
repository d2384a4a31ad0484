'use strict';
// A clustered HTTP server: the usual node:cluster program, with one line
// changed. Run: node examples/http-server.js [port] [workers]
const cluster = require('rcluster'); // was: require('node:cluster')
const http = require('node:http');
const os = require('node:os');

const port = Number(process.argv[2] || process.env.PORT || 3000);
const count = Number(process.argv[3] || process.env.WORKERS || os.availableParallelism());

if (cluster.isPrimary) {
  console.log(`primary ${process.pid}: starting ${count} workers`);
  for (let i = 0; i < count; i++) cluster.fork();
  cluster.on('listening', (worker, address) => {
    console.log(`worker ${worker.id} (pid ${worker.process.pid}) listening on ${address.address || '*'}:${address.port}`);
  });
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.id} exited (${signal || code})`);
  });
  const stop = () => cluster.disconnect(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  http.createServer((req, res) => {
    res.end(`hello from worker ${cluster.worker.id}\n`);
  }).listen(port);
}
