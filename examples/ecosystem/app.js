'use strict';
// A plain HTTP app that knows nothing of clustering: rcluster runs it on N workers.
const http = require('node:http');

const port = Number(process.env.PORT || 3000);
http.createServer((req, res) => {
  res.end(`${process.env.APP_NAME || 'app'} ${process.pid}\n`);
}).listen(port, () => console.log(`listening on ${port}`));
