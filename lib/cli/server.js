'use strict';
// The foreground CLI's control socket: answers the commands of lib/cli/commands.js.
// One socket per app name; a live one with the same name makes start-up fail,
// a stale one (its CLI died: connecting is refused) is replaced.

const fs = require('node:fs');
const net = require('node:net');
const { readLines, encode, errorOf, VERSION } = require('./protocol');
const { codes } = require('../errors');
const { HomeError } = require('./home');

// How long a connection may stay without a request in flight.
const IDLE_MS = 30000;

// Resolves with 'live', 'stale' or 'absent' for the socket at `file`.
function probe(file) {
  return new Promise((resolve, reject) => {
    let st;
    try {
      st = fs.lstatSync(file);
    } catch (err) {
      if (err.code === 'ENOENT') return resolve('absent');
      return reject(err);
    }
    if (!st.isSocket()) return reject(new HomeError(`${file} exists and is not a socket`));
    const s = net.connect(file);
    s.once('connect', () => {
      s.destroy();
      resolve('live');
    });
    s.once('error', (err) => {
      if (err.code === 'ECONNREFUSED') resolve('stale');
      else if (err.code === 'ENOENT') resolve('absent');
      else reject(err);
    });
  });
}

function listen(server, file) {
  // The socket is created 0600: no moment at which it is open to others.
  const mask = process.umask(0o177);
  try {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(mask);
  }
}

// handlers: { [cmd]: async (args) => result }. A handler's error becomes an
// error response ({ name, code, message }). Returns { file, close() }.
async function startControl({ file, name, handlers }) {
  const taken = () => new HomeError(`an app named ${JSON.stringify(name)} is already running (${file})`);
  const state = await probe(file);
  if (state === 'live') throw taken();
  if (state === 'stale') fs.unlinkSync(file);

  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // a client that goes away mid-answer
    // A client that stays connected must neither keep the CLI alive once its
    // app is gone nor hold an fd for ever: idle connections are closed.
    socket.unref();
    let inFlight = 0;
    socket.setTimeout(IDLE_MS, () => {
      if (inFlight === 0) socket.destroy();
    });
    const reply = (message) => {
      if (!socket.destroyed && socket.writable) socket.write(encode(message));
    };
    const refuse = (id, err) => reply({ id, ok: false, error: errorOf(err) });
    readLines(socket, async (req) => {
      const id = req && req.id;
      if (!req || req.v !== VERSION) {
        refuse(id, codes.ERR_RCLUSTER_PROTOCOL(`protocol version ${req && req.v} is not ${VERSION}`));
        return;
      }
      const handler = Object.hasOwn(handlers, req.cmd) ? handlers[req.cmd] : null;
      if (!handler) {
        refuse(id, codes.ERR_RCLUSTER_UNKNOWN_COMMAND(req.cmd));
        return;
      }
      inFlight++;
      try {
        const result = await handler(req.args || {}, socket);
        reply({ id, ok: true, result: result === undefined ? null : result });
      } catch (err) {
        refuse(id, err);
      } finally {
        inFlight--;
      }
    }, (err) => refuse(null, err));
  });
  try {
    await listen(server, file);
  } catch (err) {
    if (err.code === 'EADDRINUSE') throw taken(); // another CLI won the race
    throw err;
  }
  fs.chmodSync(file, 0o600);
  const { ino } = fs.statSync(file);

  const close = () => {
    server.close();
    for (const s of sockets) s.end();
    // Only our own socket: a successor may have replaced it.
    try {
      if (fs.statSync(file).ino === ino) fs.unlinkSync(file);
    } catch { /* already gone */ }
  };
  process.on('exit', close);
  server.unref();
  return { file, close, server };
}

module.exports = { startControl };
