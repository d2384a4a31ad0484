'use strict';
// The control protocol: one JSON object per line each way.
//   request  {"v":1,"id":7,"cmd":"scale","args":{"n":4}}
//   response {"v":1,"id":7,"ok":true,"result":…} or {"v":1,"id":7,"ok":false,"error":{"name","code","message"}}
// An error's name is its class (RangeError…): with code and message, what the library would have thrown.
// A line longer than MAX_LINE ends the connection: no peer of ours sends one.

const { codes } = require('../errors');

const VERSION = 1;
const MAX_LINE = 1024 * 1024;

// How long a peer that broke the protocol has to read our last words.
const LINGER_MS = 1000;

// Calls onMessage(object) per line of `socket`; onError(err) for a line that
// is too long or not JSON, after which nothing more is read and the socket
// is ended (what onError wrote goes out first).
function readLines(socket, onMessage, onError) {
  let pending = '';
  const hangUp = (err) => {
    socket.removeAllListeners('data');
    socket.pause();
    onError(err);
    socket.end();
    setTimeout(() => socket.destroy(), LINGER_MS).unref();
  };
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf('\n')) !== -1) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.length === 0) continue;
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        hangUp(codes.ERR_RCLUSTER_PROTOCOL('a line that is not JSON'));
        return;
      }
      onMessage(message);
      if (socket.destroyed) return;
    }
    if (pending.length > MAX_LINE) {
      hangUp(codes.ERR_RCLUSTER_PROTOCOL(`a line over ${MAX_LINE} bytes`));
    }
  });
}

// An error as a response carries it.
function errorOf(err) {
  return { name: err.name, code: err.code || 'ERR_RCLUSTER_COMMAND', message: err.message };
}

function encode(message) {
  return `${JSON.stringify({ v: VERSION, ...message })}\n`;
}

module.exports = { VERSION, readLines, encode, errorOf };
