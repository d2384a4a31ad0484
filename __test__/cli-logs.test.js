'use strict';
// Worker output under the CLI: attributed per line, never split or mixed.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { tempDir, runCli, statusJson, runToExit, stopCli } = require('./cli-helpers');
const { LineSplitter } = require('../lib/cli/logs');

const LONG = 300 * 1024; // several pipe buffers: read in many chunks, and interleaved in the CLI

// Each worker writes: short lines; long lines in pieces over several ticks,
// both workers at once; a line on stderr; and a last line with no newline.
function writeApp(dir) {
  const file = path.join(dir, 'talk.js');
  fs.writeFileSync(file, `'use strict';
const pieces = (s, n) => Array.from({ length: n }, (_, i) => s.slice((i * s.length) / n, ((i + 1) * s.length) / n));
async function main() {
  for (let i = 0; i < 20; i++) process.stdout.write('short ' + i + ' from ' + process.pid + '\\n');
  for (let k = 0; k < 3; k++) {
    const line = 'long' + k + ':' + process.pid + ':' + ''.padEnd(${LONG}, String(k));
    for (const p of pieces(line, 7)) {
      process.stdout.write(p);
      await new Promise((r) => setImmediate(r));
    }
    process.stdout.write('\\n');
  }
  process.stderr.write('err line from ' + process.pid + '\\n');
  process.stdout.write('no newline from ' + process.pid);
  // Alive until asked to leave (a timer would keep it past the disconnect).
  const t = setInterval(() => {}, 1000);
  process.on('disconnect', () => clearInterval(t));
}
main();
`);
  return file;
}

function checkLines(lines, parse) {
  const byPid = new Map();
  for (const raw of lines) {
    const { pid, msg } = parse(raw);
    if (!byPid.has(pid)) byPid.set(pid, []);
    byPid.get(pid).push(msg);
  }
  assert.equal(byPid.size, 2, 'two workers');
  for (const [pid, msgs] of byPid) {
    const expected = [
      ...Array.from({ length: 20 }, (_, i) => `short ${i} from ${pid}`),
      ...[0, 1, 2].map((k) => `long${k}:${pid}:${''.padEnd(LONG, String(k))}`),
      `no newline from ${pid}`,
    ];
    assert.equal(msgs.length, expected.length, `pid ${pid}: ${msgs.map((m) => m.slice(0, 40)).join(' | ')}`);
    assert.ok(msgs.every((m, i) => m === expected[i]), `pid ${pid}: every line whole and in order`);
  }
  return byPid;
}

test('prefixed lines from several workers, whole, with partial lines flushed', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const run = runCli(['-i', '2', writeApp(dir)], { home });
  // 20 short + 3 long + 1 partial per worker.
  const lines = await run.until(/^\[talk [01]\] /, 48, 'stdout');
  const st = await statusJson('talk', home);
  const slotOf = new Map(st.workers.map((w) => [w.pid, w.slot]));
  checkLines(lines, (l) => {
    const m = /^\[talk ([01])\] (.*)$/s.exec(l);
    const pid = Number(/(?:from |long\d:)(\d+)/.exec(m[2])[1]);
    assert.equal(Number(m[1]), slotOf.get(pid), 'the prefix names the worker\'s slot');
    return { pid, msg: m[2] };
  });
  assert.equal(run.text.stdout.split('\n').filter(Boolean).length, 48, 'nothing else on stdout');
  const err = await run.until(/^\[talk [01]\] err line from \d+$/, 2, 'stderr');
  assert.equal(err.length, 2);
  await stopCli(run);
});

test('--log-format json: one object per line with time, app, slot, id, pid, stream, msg', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const run = runCli(['-i', '2', '--log-format', 'json', '--name', 'api', writeApp(dir)], { home });
  const lines = await run.until(/^\{/, 48, 'stdout');
  const st = await statusJson('api', home);
  const byPid = new Map(st.workers.map((w) => [w.pid, w]));
  checkLines(lines, (l) => {
    const o = JSON.parse(l);
    assert.deepEqual(Object.keys(o), ['time', 'app', 'slot', 'id', 'pid', 'stream', 'msg']);
    assert.ok(!Number.isNaN(Date.parse(o.time)));
    assert.equal(o.app, 'api');
    assert.equal(o.stream, 'stdout');
    assert.equal(o.slot, byPid.get(o.pid).slot);
    assert.equal(o.id, byPid.get(o.pid).id);
    return o;
  });
  const err = (await run.until(/^\{.*"stream":"stderr"/, 2, 'stderr')).map((l) => JSON.parse(l));
  assert.deepEqual(err.map((o) => o.msg).sort(), st.workers.map((w) => `err line from ${w.pid}`).sort());
  await stopCli(run);
});

test('--log-format raw passes output through untouched', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'raw.js');
  fs.writeFileSync(file, "process.stdout.write('a\\r\\nb'); process.stderr.write('c'); process.exit(0);\n");
  const r = await runToExit(['-q', '-i', '1', '--log-format', 'raw', file], { home: path.join(dir, 'home') });
  assert.deepEqual([r.code, r.stdout, r.stderr], [0, 'a\r\nb', 'c']);
  const p = await runToExit(['-q', '-i', '1', file], { home: path.join(dir, 'home') });
  assert.deepEqual([p.code, p.stdout, p.stderr], [0, '[raw 0] a\r\n[raw 0] b\n', '[raw 0] c\n']);
});

test('a worker the core restarts into the same slot is attributed too', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const file = path.join(dir, 'phoenix.js');
  const mark = path.join(dir, 'crashed');
  fs.writeFileSync(file, `const fs = require('node:fs');
if (!fs.existsSync(${JSON.stringify(mark)})) {
  fs.writeFileSync(${JSON.stringify(mark)}, '');
  console.log('first life ' + process.pid);
  process.exit(5);
}
console.log('second life ' + process.pid);
const t = setInterval(() => {}, 1000);
process.on('disconnect', () => clearInterval(t));
`);
  const run = runCli(['-i', '1', '--restart', '--log-format', 'json', file], { home });
  const [second] = await run.until(/second life/, 1, 'stdout');
  const first = JSON.parse((await run.until(/first life/, 1, 'stdout'))[0]);
  const o = JSON.parse(second);
  assert.equal(o.slot, 0);
  assert.equal(first.slot, 0);
  assert.notEqual(o.pid, first.pid);
  assert.equal(o.msg, `second life ${o.pid}`);
  const st = await statusJson('phoenix', home);
  assert.deepEqual(st.workers.map((w) => [w.pid, w.restarts]), [[o.pid, 1]]);
  await stopCli(run);
});

test('LineSplitter: pieces make whole lines, a partial one is flushed after a pause, overlong ones cut', async () => {
  const got = [];
  const s = new LineSplitter((l) => got.push(l.toString()), { flushMs: 30, maxLine: 8 });
  s.push(Buffer.from('ab'));
  s.push(Buffer.from('c\n\nde'));
  assert.deepEqual(got, ['abc', '']);
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(got, ['abc', '', 'de']);
  s.push(Buffer.from('0123456789abcdefXY\n12345678\n'));
  assert.deepEqual(got.slice(3), ['01234567', '89abcdef', 'XY', '12345678']);
  s.push(Buffer.from('tail'));
  s.end();
  assert.deepEqual(got.slice(7), ['tail']);
  // A stream we hold back is not silent: its partial line waits for the rest.
  let held = true;
  const h = new LineSplitter((l) => got.push(l.toString()), { flushMs: 30, held: () => held });
  h.push(Buffer.from('par'));
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(got.slice(8), []);
  h.push(Buffer.from('tial\n'));
  assert.deepEqual(got.slice(8), ['partial']);
  h.push(Buffer.from('rest'));
  held = false;
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(got.slice(9), ['rest']);
});

test('a reader slower than the workers holds their writes back instead of filling the CLI\'s memory', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const progress = path.join(dir, 'written');
  const TOTAL = 32768 * 1000;
  const file = path.join(dir, 'flood.js');
  // Writes TOTAL bytes of 1000-byte lines as fast as its own stdout takes
  // them, in writes that end mid-line, recording how much it has written;
  // then 'done'.
  fs.writeFileSync(file, `const fs = require('node:fs');
const all = ('x'.repeat(999) + '\\n').repeat(${TOTAL / 1000});
let written = 0;
const record = () => fs.writeFileSync(${JSON.stringify(progress)}, String(written));
function more() {
  while (written < all.length) {
    const piece = all.slice(written, written + 65000);
    written += piece.length;
    if (!process.stdout.write(piece)) {
      record();
      process.stdout.once('drain', more);
      return;
    }
  }
  record();
  process.stdout.write('done\\n');
}
const t = setInterval(record, 50);
process.on('disconnect', () => clearInterval(t));
more();
`);
  const run = runCli(['-i', '1', file], { home, unreadStdout: true });
  await run.until(/online/);
  // Nobody reads the CLI's stdout for a while.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const held = Number(fs.readFileSync(progress, 'utf8'));
  assert.ok(held < TOTAL / 4, `the worker wrote ${held} bytes while nobody read the CLI's output`);
  // Now read it all: nothing lost, nothing else (a line held back by the CLI
  // is not cut; under load one may still arrive in two pieces after 100 ms
  // without its end, so the check is on the text, not on the line count).
  const prefix = '[flood 0] ';
  let rest = '';
  let xs = 0;
  let whole = 0;
  const other = [];
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${xs} bytes in 60 s`)), 60000);
    run.child.stdout.setEncoding('utf8').on('data', (d) => {
      const parts = (rest + d).split('\n');
      rest = parts.pop();
      for (const l of parts) {
        const msg = l.startsWith(prefix) ? l.slice(prefix.length) : null;
        if (msg === 'done') {
          clearTimeout(timer);
          resolve();
        } else if (msg !== null && /^x+$/.test(msg)) {
          xs += msg.length;
          if (msg.length === 999) whole++;
        } else if (other.length < 5) other.push(l.slice(0, 80));
      }
    });
  });
  await done;
  assert.deepEqual(other, []);
  assert.equal(xs, (TOTAL / 1000) * 999);
  assert.ok(whole > (TOTAL / 1000) * 0.9, `${whole} whole lines`);
  await stopCli(run);
});

test('rcluster stop writes the workers\' last lines before the CLI exits', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const file = path.join(dir, 'farewell.js');
  const LINES = 20000;
  // On disconnect: many lines at once (more than a pipe holds), then a natural exit.
  fs.writeFileSync(file, `const t = setInterval(() => {}, 1000);
process.on('disconnect', () => {
  clearInterval(t);
  let out = '';
  for (let i = 0; i < ${LINES}; i++) out += 'bye ' + i + '\\n';
  process.stdout.write(out);
});
`);
  const run = runCli(['-i', '2', file], { home });
  await run.until(/online/, 2);
  const stopped = await runToExit(['stop', 'farewell'], { home });
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.equal((await run.exited).code, 0);
  // Each slot's text, whole and in order (under load a line may arrive in two
  // pieces: a partial line is written after 100 ms without its end).
  const all = Array.from({ length: LINES }, (_, i) => `bye ${i}`).join('');
  for (const slot of [0, 1]) {
    const prefix = `[farewell ${slot}] `;
    const got = run.text.stdout.split('\n').filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length));
    assert.equal(got.join(''), all, `slot ${slot}: ${got.length} lines`);
  }
});
