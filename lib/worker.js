'use strict';
// `Worker` and `worker.process` for the primary. The process object behaves
// like the ChildProcess Node's cluster gives you; underneath, the Rust core
// owns the real process and its channel.

const EventEmitter = require('node:events');
const { Worker: NodeWorker } = require('node:cluster');
const net = require('node:net');
const dgram = require('node:dgram');
const { constants: { signals } } = require('node:os');

const binding = require('./binding');
const serialization = require('./serialization');
const { codes, errnoException } = require('./errors');
const { validateObject } = require('./validate');

// Node's send() reports back-pressure past this many queued bytes.
const QUEUE_HIGH_WATER = 65536 * 2;

// Sends made while a batch of core events is delivered (from 'message'
// listeners, mostly) are corked: each process's frames leave in one write
// once the batch is done, or sooner past CORK_LIMIT bytes or when anything
// else must follow them (a handle, disconnect, kill, the primary's exit).
// 16 KiB, not more: the kernel copies a larger write into freshly allocated
// pages, which cost more than the writes saved.
const CORK_LIMIT = 16384;
let corking = false;
const corked = new Set();

function cork() {
  corking = true;
}

function uncorkAll() {
  corking = false;
  for (const proc of corked) proc._uncork();
}

function toSignal(signal) {
  if (signal === undefined) return signals.SIGTERM;
  if (typeof signal === 'number') {
    if (signal === 0 || Object.values(signals).includes(signal)) return signal;
    throw codes.ERR_UNKNOWN_SIGNAL(signal);
  }
  if (typeof signal === 'string' && Object.prototype.hasOwnProperty.call(signals, signal.toUpperCase())) {
    return signals[signal.toUpperCase()];
  }
  throw codes.ERR_UNKNOWN_SIGNAL(signal);
}

// What a handle is on the wire, and the fd to pass.
function describeHandle(handle) {
  if (handle instanceof net.Socket) {
    return { type: 'net.Socket', fd: handle._handle ? handle._handle.fd : -1 };
  }
  if (handle instanceof net.Server) {
    return { type: 'net.Server', fd: handle._handle ? handle._handle.fd : -1 };
  }
  if (handle instanceof dgram.Socket) {
    const state = Object.getOwnPropertySymbols(handle).find((s) => s.description === 'state symbol');
    const native = state && handle[state] && handle[state].handle;
    return { type: 'dgram.Socket', fd: native ? native.fd : -1, dgramType: handle.type };
  }
  const name = handle && handle.constructor && handle.constructor.name;
  if (name === 'TCP' || name === 'Pipe') return { type: 'net.Native', fd: handle.fd };
  if (name === 'UDP') return { type: 'dgram.Native', fd: handle.fd };
  return null;
}

// Turns an fd received with a message into the object Node would deliver.
// `track` is called with a received net.Socket that belonged to a server in
// the worker (the envelope names that server's key).
function adoptHandle(envelope, fd, socket, deliver, track) {
  const type = envelope.type;
  if (socket === 'udp4' || socket === 'udp6') {
    const s = dgram.createSocket(envelope.dgramType || socket);
    s.bind({ fd }, () => deliver(s));
  } else if (socket === 'tcp-server' || socket === 'pipe-server' || type === 'net.Server') {
    const server = new net.Server();
    server.listen({ fd }, () => deliver(server));
  } else if (socket === 'tcp' || socket === 'pipe') {
    const s = new net.Socket({ fd, readable: true, writable: true });
    if (envelope.key) track(envelope.key, s);
    deliver(s);
  } else {
    binding.closeFd(fd);
    deliver(undefined);
  }
}

class WorkerProcess extends EventEmitter {
  constructor(id, spawnfile, spawnargs, serializationMode) {
    super();
    this._id = id;
    this._serialization = serialization[serializationMode];
    this._callbacks = new Map();
    this._nextToken = 1;
    // Sockets received from the worker, by the key of the worker's server
    // they came from: the worker's server.close() asks about them.
    this._socketLists = new Map();
    this._closeWaits = 1; // the exit; plus each stdio stream
    this._queued = 0; // bytes the core held for this worker after the last write
    // Set by an undecodable frame: the channel is closing, and nothing read
    // after that frame is delivered (as if reading had stopped there).
    this._garbled = false;
    this.pid = undefined;
    this.spawnfile = spawnfile;
    this.spawnargs = spawnargs;
    this.exitCode = null;
    this.signalCode = null;
    this.killed = false;
    this.connected = false;
    this.stdin = null;
    this.stdout = null;
    this.stderr = null;
    this.stdio = [null, null, null];
    this.channel = undefined;
  }

  _attachStdio(result) {
    const names = ['stdin', 'stdout', 'stderr'];
    for (let i = 0; i < 3; i++) {
      const fd = result[names[i]];
      if (fd == null) continue;
      const stream = new net.Socket({ fd, readable: i !== 0, writable: i === 0 });
      if (i !== 0) {
        this._closeWaits++;
        stream.once('close', () => this._maybeClose());
      }
      this[names[i]] = stream;
      this.stdio[i] = stream;
    }
    // Pipes past the first three are duplex, as in Node.
    (result.extra || []).forEach((fd, k) => {
      this.stdio[k + 3] = fd >= 0 ? new net.Socket({ fd, readable: true, writable: true }) : null;
    });
  }

  // 'close' waits for the output pipes to end, and a pipe nobody reads never
  // does: once the process is gone, read them to the end, as child_process does.
  _flushStdio() {
    for (const stream of this.stdio) if (stream && stream.readable) stream.resume();
  }

  _maybeClose() {
    if (--this._closeWaits === 0) this.emit('close', this.exitCode, this.signalCode);
  }

  kill(sig) {
    const signal = toSignal(sig);
    this._uncork();
    if (this.exitCode !== null || this.signalCode !== null || this.pid === undefined) return false;
    const errno = binding.kill(this._id, signal);
    if (errno === 0) {
      this.killed = true;
      return true;
    }
    const { getSystemErrorName } = require('node:util');
    if (getSystemErrorName(errno) === 'ESRCH') return false;
    this.emit('error', errnoException(errno, 'kill'));
    return false;
  }

  send(message, handle, options, callback) {
    if (typeof handle === 'function') {
      callback = handle;
      handle = undefined;
      options = undefined;
    } else if (typeof options === 'function') {
      callback = options;
      options = undefined;
    } else if (options !== undefined) {
      validateObject(options, 'options');
    }
    options = { swallowErrors: false, ...options };
    if (message === undefined) throw codes.ERR_MISSING_ARGS('message');
    if (typeof message !== 'string' && typeof message !== 'object' &&
        typeof message !== 'number' && typeof message !== 'boolean') {
      throw codes.ERR_INVALID_ARG_TYPE('message', ['string', 'object', 'number', 'boolean'], message);
    }
    let described = null;
    if (handle !== undefined && handle !== null) {
      described = describeHandle(handle);
      if (described === null) throw codes.ERR_INVALID_HANDLE_TYPE();
    }
    if (!this.connected) {
      const ex = codes.ERR_IPC_CHANNEL_CLOSED();
      if (typeof callback === 'function') process.nextTick(callback, ex);
      else process.nextTick(() => this.emit('error', ex));
      return false;
    }
    let wire = message;
    let fd;
    if (described) {
      if (described.fd < 0) {
        // A closed socket: Node sends the message without a handle.
        described = null;
      } else {
        wire = { cmd: 'NODE_HANDLE', type: described.type, msg: message };
        if (described.dgramType) wire.dgramType = described.dgramType;
        fd = described.fd;
      }
    }
    const frame = this._serialization.encode(wire);
    const closeAfter = described && described.type === 'net.Socket' && !options.keepOpen ? handle : null;
    let token;
    if (typeof callback === 'function' || closeAfter) {
      token = this._nextToken++;
      this._callbacks.set(token, {
        done: false,
        err: null,
        run: (err) => {
          if (closeAfter && !err) closeAfter.destroy();
          if (typeof callback === 'function') callback(err);
          else if (err && !options.swallowErrors) this.emit('error', err);
        },
      });
    }
    if (corking && fd === undefined && frame.length < CORK_LIMIT) {
      let c = this._cork;
      if (!c) {
        c = this._cork = { frames: [], tokens: [], bytes: 0 };
        corked.add(this);
      }
      c.frames.push(frame);
      c.tokens.push(token);
      c.bytes += frame.length;
      // Back-pressure as if the corked bytes were queued behind what the
      // core already holds for this worker.
      const pressure = this._queued + c.bytes;
      if (c.bytes >= CORK_LIMIT) this._uncork();
      return pressure < QUEUE_HIGH_WATER;
    }
    this._uncork();
    return this._write(frame, fd, [token]);
  }

  _uncork() {
    const c = this._cork;
    if (!c) return;
    this._cork = null;
    corked.delete(this);
    let frame = c.frames[0];
    if (c.frames.length > 1) frame = typeof frame === 'string' ? c.frames.join('') : Buffer.concat(c.frames, c.bytes);
    this._write(frame, undefined, c.tokens);
  }

  // Writes one frame (or several, corked) for sends whose callbacks have
  // `tokens` (undefined: no callback).
  _write(frame, fd, tokens) {
    const known = tokens.filter((t) => t !== undefined);
    const last = known.length > 0 ? known[known.length - 1] : undefined;
    // 0: written at once, on this thread; no `sent` event will follow.
    const queued = binding.send(this._id, frame, fd, last);
    this._queued = Math.max(queued, 0);
    if (queued < 0) {
      const ex = codes.ERR_IPC_CHANNEL_CLOSED();
      for (const token of tokens) {
        const entry = token === undefined ? undefined : this._callbacks.get(token);
        if (entry) {
          this._callbacks.delete(token);
          process.nextTick(entry.run, ex);
        } else {
          process.nextTick(() => this.emit('error', ex));
        }
      }
      return false;
    }
    if (last !== undefined) {
      // The frame's other senders settle with the last one.
      if (known.length > 1) this._callbacks.get(last).also = known.slice(0, -1);
      if (queued === 0) process.nextTick(() => this._onSent(last, undefined));
    }
    return queued < QUEUE_HIGH_WATER;
  }

  disconnect() {
    if (!this.connected) {
      this.emit('error', codes.ERR_IPC_DISCONNECTED());
      return;
    }
    this._uncork();
    this.connected = false;
    binding.closeChannel(this._id);
    // The core confirms with a `disconnect` event once the channel is closed.
  }

  ref() {
    binding.refWorker(this._id, true);
  }

  unref() {
    binding.refWorker(this._id, false);
  }

  // Core events for this process; `worker` is the cluster Worker.
  _onEvent(ev) {
    switch (ev.kind) {
      case 'message':
        return this._onMessage(ev);
      case 'sent':
        return this._onSent(ev.token, ev.message);
      case 'error': {
        let err;
        if (ev.errorCode === 'ERR_RCLUSTER_BAD_MESSAGE') {
          err = codes.ERR_RCLUSTER_BAD_MESSAGE(ev.message);
        } else {
          err = new Error(ev.message);
          err.code = ev.errorCode;
        }
        // A broken worker must not take the primary down with an unhandled
        // 'error': report it where someone listens, else as a warning.
        if (this._worker && this._worker.listenerCount('error') > 0) this.emit('error', err);
        else process.emitWarning(err);
        return;
      }
      case 'internal': {
        const msg = JSON.parse(ev.json);
        if (typeof msg.cmd === 'string' && msg.cmd.startsWith('NODE_SOCKET_')) this._onSocketListMessage(msg);
        return;
      }
      case 'disconnect':
        if (this._disconnected) return;
        this._disconnected = true;
        this.connected = false;
        this.emit('disconnect');
        return;
      case 'exit':
        if (ev.signal) this.signalCode = ev.signal;
        else this.exitCode = ev.code;
        // What the core's supervision does next (restart, crash loop).
        this._next = ev.next || null;
        // Pending send callbacks whose frames never left get their errors
        // through `sent`; anything else left now is moot.
        this.emit('exit', this.exitCode, this.signalCode);
        process.nextTick(() => {
          this._flushStdio();
          this._maybeClose();
        });
        return;
      default:
        // online, listening, exitedAfterDisconnect, rcluster: cluster-level.
        this.emit('internalEvent', ev);
    }
  }

  // Callbacks run in the order of the sends, whichever way each frame left.
  _onSent(token, message) {
    const entry = this._callbacks.get(token);
    if (!entry) return;
    const err = message ? Object.assign(codes.ERR_IPC_CHANNEL_CLOSED(), { cause: message }) : null;
    for (const t of [...(entry.also || []), token]) {
      const e = this._callbacks.get(t);
      if (e) Object.assign(e, { done: true, err });
    }
    for (const [t, e] of this._callbacks) {
      if (!e.done) break;
      this._callbacks.delete(t);
      e.run(e.err);
    }
  }

  // A user message without a handle: a JSON line, or an advanced payload.
  _onFrame(frame) {
    if (this._garbled) return;
    let value;
    try {
      value = typeof frame === 'string' ? JSON.parse(frame) : this._serialization.decode(frame);
    } catch (e) {
      this._onUndecodable(e);
      return;
    }
    this.emit('message', value);
  }

  _onUndecodable(e) {
    this._garbled = true;
    const message = `undecodable message: ${e.message}`;
    this._onEvent({ kind: 'error', errorCode: 'ERR_RCLUSTER_BAD_MESSAGE', message });
    binding.closeChannel(this._id);
  }

  // A message that came with a handle (`ev.fd`, now ours).
  _onMessage(ev) {
    if (this._garbled) {
      if (ev.fd != null) binding.closeFd(ev.fd);
      return;
    }
    let value;
    try {
      value = this._serialization.decode(ev.data);
    } catch (e) {
      if (ev.fd != null) binding.closeFd(ev.fd);
      this._onUndecodable(e);
      return;
    }
    if (ev.fd == null) {
      this.emit('message', value);
      return;
    }
    const inner = value && value.msg;
    if (inner && typeof inner.cmd === 'string' && inner.cmd.startsWith('NODE_')) {
      binding.closeFd(ev.fd);
      return;
    }
    adoptHandle(value, ev.fd, ev.socket, (handle) => this.emit('message', inner, handle),
      (key, s) => this._trackSocket(key, s));
  }

  _sendInternal(message) {
    this._uncork();
    if (this.connected) binding.send(this._id, this._serialization.encode(message));
  }

  // Node's receiving side of a socket list: counts the sockets, and says when
  // all are closed once the worker asks (NODE_SOCKET_NOTIFY_CLOSE).
  _trackSocket(key, socket) {
    let list = this._socketLists.get(key);
    if (!list) this._socketLists.set(key, (list = { connections: 0, notify: false }));
    list.connections++;
    socket.once('close', () => {
      if (--list.connections === 0 && list.notify) {
        list.notify = false;
        this._sendInternal({ cmd: 'NODE_SOCKET_ALL_CLOSED', key });
      }
    });
  }

  _onSocketListMessage(msg) {
    const list = this._socketLists.get(msg.key);
    if (!list) return;
    if (msg.cmd === 'NODE_SOCKET_NOTIFY_CLOSE') {
      if (list.connections === 0) this._sendInternal({ cmd: 'NODE_SOCKET_ALL_CLOSED', key: msg.key });
      else list.notify = true;
    } else if (msg.cmd === 'NODE_SOCKET_GET_COUNT') {
      this._sendInternal({ cmd: 'NODE_SOCKET_COUNT', key: msg.key, count: list.connections });
    }
  }
}

// A plain constructor, like Node's: `cluster.Worker.call(obj, options)` and
// `cluster.Worker(options)` without `new` both work.
function Worker(options) {
  if (!(this instanceof Worker)) return new Worker(options);
  EventEmitter.call(this);
  if (options === null || typeof options !== 'object') options = {};
  this.exitedAfterDisconnect = undefined;
  this.state = options.state || 'none';
  this.id = options.id | 0;
  if (options.process) {
    this.process = options.process;
    this.process._worker = this;
    this.process.on('error', (code, signal) => this.emit('error', code, signal));
    this.process.on('message', (message, handle) => this.emit('message', message, handle));
  }
}
// A node:cluster Worker too (`instanceof`, as the types say): every method of
// Node's Worker.prototype is replaced, below and in primary.js.
Object.setPrototypeOf(Worker.prototype, NodeWorker.prototype);
Object.setPrototypeOf(Worker, NodeWorker);

Worker.prototype.kill = function kill(...args) {
  return this.destroy(...args);
};

Worker.prototype.send = function send(...args) {
  return this.process.send(...args);
};

Worker.prototype.isDead = function isDead() {
  return this.process.exitCode != null || this.process.signalCode != null;
};

Worker.prototype.isConnected = function isConnected() {
  return this.process.connected;
};

module.exports = { Worker, WorkerProcess, cork, uncorkAll };
