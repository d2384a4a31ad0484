'use strict';
// The application: a plain HTTP server that knows nothing of clustering.
// `rcluster -i max --metrics 0.0.0.0:9100 app.js` runs one copy per CPU the
// container may use, all sharing port 8080.
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`hello from worker ${process.pid}\n`);
});
server.listen(Number(process.env.PORT || 8080), '0.0.0.0');

// rcluster's shutdown disconnects each worker, which closes its server: open
// keep-alive connections are finished, then the worker exits by itself.
