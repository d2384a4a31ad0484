'use strict';
// Worker stdout/stderr, one whole line at a time, attributed to its worker:
//   prefix: "[api 0] listening"        json: {"time","app","slot","id","pid","stream","msg"}
// Each line goes out in one write, so lines of different workers never mix.
// A partial line is written once its worker is silent for FLUSH_MS, or its
// stream ends; one longer than MAX_LINE is written in MAX_LINE pieces.
// Our stdout is asynchronous when it is a pipe or a socket: while it is over
// its buffer, the workers that write to it are not read (see `gate`).

const FLUSH_MS = 100;
const MAX_LINE = 1024 * 1024;
const NL = 0x0a;
const NEWLINE = Buffer.from('\n');
// How long an exit waits for the output still on its way (see `settled`).
const SETTLE_MS = 3000;

// The splitters of worker streams that have not ended yet.
const open = new Set();

// Splits a byte stream into lines; emit(Buffer line without '\n').
class LineSplitter {
  // `held()`: true while we, not the writer, stopped the stream (see `gate`):
  // that is no silence, and a partial line then waits for its end.
  constructor(emit, { flushMs = FLUSH_MS, maxLine = MAX_LINE, held = () => false } = {}) {
    this.emit = emit;
    this.flushMs = flushMs;
    this.maxLine = maxLine;
    this.held = held;
    this.parts = [];
    this.size = 0;
    this.timer = null;
  }

  push(chunk) {
    let start = 0;
    let nl;
    while ((nl = chunk.indexOf(NL, start)) !== -1) {
      this.take(chunk.subarray(start, nl));
      this.flush(true);
      start = nl + 1;
    }
    if (start < chunk.length) this.take(chunk.subarray(start));
    this.arm();
  }

  take(piece) {
    while (this.size + piece.length > this.maxLine) {
      const room = this.maxLine - this.size;
      this.parts.push(piece.subarray(0, room));
      this.size += room;
      this.flush(true);
      piece = piece.subarray(room);
    }
    if (piece.length) {
      this.parts.push(piece);
      this.size += piece.length;
    }
  }

  // `whole`: also an empty line (a bare "\n" is a line).
  flush(whole = false) {
    if (this.size === 0 && !whole) return;
    const line = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    this.emit(line);
  }

  arm() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.held()) this.arm();
      else this.flush();
    }, this.flushMs);
    this.timer.unref();
  }

  end() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.flush();
  }
}

function formatter(format, app, worker, stream) {
  if (format === 'json') {
    return (line) => `${JSON.stringify({
      time: new Date().toISOString(), app, slot: worker.slot, id: worker.id, pid: worker.process.pid, stream,
      msg: line.toString('utf8'),
    })}\n`;
  }
  const prefix = Buffer.from(`[${app} ${worker.slot}] `);
  return (line) => Buffer.concat([prefix, line, NEWLINE]);
}

// Writes to `sink`; once a write finds it over its buffer, the source that
// made it is paused until the sink drains. Without this a reader slower than
// the workers (a pipe to a log shipper) would grow the CLI's memory without
// bound; with it the workers' own pipes fill and their writes wait, as when
// they write to the reader directly.
function gate(sink) {
  const paused = new Set();
  const resume = () => {
    for (const source of paused) source.resume();
    paused.clear();
  };
  return (source, data) => {
    if (sink.write(data) || paused.has(source)) return;
    if (paused.size === 0) sink.once('drain', resume);
    paused.add(source);
    source.pause();
  };
}

// Attributes the output of every worker `cluster` forks from now on (fork(),
// reload and scale successors, and the core's own restarts all emit 'fork').
function attributeLogs(cluster, { app, format, out = process.stdout, err = process.stderr }) {
  const writers = { stdout: gate(out), stderr: gate(err) };
  cluster.on('fork', (worker) => {
    for (const name of ['stdout', 'stderr']) {
      const stream = worker.process[name];
      if (!stream) continue;
      const format1 = formatter(format, app, worker, name);
      const write = writers[name];
      const splitter = new LineSplitter((line) => write(stream, format1(line)), {
        held: () => stream.isPaused(),
      });
      open.add(splitter);
      stream.on('data', (chunk) => splitter.push(chunk));
      stream.on('end', () => { splitter.end(); open.delete(splitter); });
      stream.on('error', () => {});
    }
  });
  // Whatever is still partial when the CLI exits.
  process.on('exit', () => { for (const s of open) s.end(); });
}

// Resolves once every worker's output has been read to its end and our own
// stdout and stderr hold nothing unwritten, or after `limitMs`. For use
// before process.exit(), which drops both: a worker's last lines can still be
// in its pipe when its 'exit' comes, and a pipe or socket stdout is written
// asynchronously.
function settled(limitMs = SETTLE_MS) {
  const deadline = Date.now() + limitMs;
  const done = () => open.size === 0 && !process.stdout.writableLength && !process.stderr.writableLength;
  return new Promise((resolve) => {
    const check = () => {
      if (done() || Date.now() >= deadline) resolve();
      else setTimeout(check, 10);
    };
    check();
  });
}

// Copies `stream` to `sink` whole lines at a time, unchanged (the ecosystem
// runner uses it for its apps' CLIs, whose lines are already attributed).
function relayLines(stream, sink, write = gate(sink)) {
  const splitter = new LineSplitter((line) => write(stream, Buffer.concat([line, NEWLINE])), {
    held: () => stream.isPaused(),
  });
  stream.on('data', (chunk) => splitter.push(chunk));
  stream.on('end', () => splitter.end());
  return splitter;
}

module.exports = { LineSplitter, attributeLogs, relayLines, gate, settled };
