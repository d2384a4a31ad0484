'use strict';
// The control socket and its commands, driven from other processes as a user would.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const fs = require('node:fs');
const path = require('node:path');
const { tempDir, freePort, runCli, runToExit, get, statusJson, stopCli } = require('./cli-helpers');
const { isGone } = require('./helpers');

const app = path.join(__dirname, 'fixtures', 'cli-app.js');
const STATS_FIELDS = ['id', 'pid', 'slot', 'state', 'uptime', 'restarts', 'rss', 'cpu', 'handoffs'].sort();

async function start(args, { name = 'web', workers = 2, env = {} } = {}) {
  const home = path.join(tempDir(), 'home');
  const port = await freePort();
  const run = runCli(['--name', name, ...args, app], { home, env: { PORT: String(port), ...env } });
  await run.until(/listening on 127\.0\.0\.1:/, workers);
  return { home, port, run, name };
}

test('ls, status, scale, reload and stop from another process', async () => {
  const { home, port, run, name } = await start(['-i', '2']);
  const ls = await runToExit(['ls'], { home });
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, /^NAME\s+PID\s+WORKERS\s+UPTIME\s+APP\n/);
  assert.match(ls.stdout, new RegExp(`^web\\s+${run.child.pid}\\s+2\\s+`, 'm'));
  const lsJson = JSON.parse((await runToExit(['ls', '--json'], { home })).stdout);
  assert.deepEqual(lsJson.map((a) => [a.name, a.pid, a.workers]), [['web', run.child.pid, 2]]);

  const table = await runToExit(['status', name], { home });
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trim().split('\n');
  assert.match(lines[1], /^SLOT\s+ID\s+PID\s+STATE\s+UPTIME\s+RESTARTS\s+MEMORY\s+CPU\s+HANDOFFS$/);
  assert.equal(lines.length, 4);
  lines.slice(2).forEach((line, slot) => {
    assert.match(line, new RegExp(`^${slot}\\s+\\d+\\s+\\d+\\s+listening\\s+\\d+s\\s+0\\s+[\\d.]+[KMG]\\s+[\\d.]+s\\s+\\d+$`));
  });

  const st = await statusJson(name, home);
  assert.deepEqual(Object.keys(st).sort(), ['primary', 'totals', 'workers']);
  assert.equal(st.workers.length, 2);
  for (const w of st.workers) assert.deepEqual(Object.keys(w).sort(), STATS_FIELDS);
  assert.equal(st.primary.pid, run.child.pid);
  const before = st.workers.map((w) => w.pid);

  const scaled = await runToExit(['scale', name, '3'], { home });
  assert.equal(scaled.code, 0, scaled.stderr);
  assert.equal(scaled.stdout, 'web: 3 workers\n');
  assert.equal((await statusJson(name, home)).workers.length, 3);
  assert.equal((await runToExit(['scale', name, '1'], { home })).code, 0);
  const one = await statusJson(name, home);
  assert.deepEqual(one.workers.map((w) => w.slot), [0]);

  const reloaded = await runToExit(['reload', name], { home });
  assert.equal(reloaded.code, 0, reloaded.stderr);
  const after = await statusJson(name, home);
  assert.equal(after.workers.length, 1);
  assert.ok(!before.includes(after.workers[0].pid), 'a new worker after reload');
  assert.equal((await get(port)).body, String(after.workers[0].pid));

  const stopped = await runToExit(['stop', name], { home });
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.equal(stopped.stdout, 'web: stopped\n');
  assert.deepEqual(await run.exited, { code: 0, signal: null });
  assert.equal(isGone(after.workers[0].pid), true);
  assert.deepEqual(fs.readdirSync(home), [], 'the socket is removed');
  const gone = await runToExit(['status', name], { home });
  assert.equal(gone.code, 1);
  assert.equal(gone.stderr, 'rcluster: no app named "web" is running (rcluster ls lists them)\n');
});

test('a reload under load fails no request', async () => {
  const { home, port, run, name } = await start(['-i', '2']);
  let stop = false;
  let ok = 0;
  const failures = [];
  const deadline = Date.now() + 60000;
  // Four bounded request loops, each a new connection per request.
  let loopsDone = 0;
  const loops = [0, 1, 2, 3].map(async () => {
    for (let i = 0; i < 5000 && !stop && Date.now() < deadline; i++) {
      try {
        const r = await get(port);
        if (r.status === 200 && /^\d+$/.test(r.body)) ok++;
        else failures.push(`status ${r.status}: ${r.body}`);
      } catch (err) {
        failures.push(err.message);
      }
    }
    loopsDone++;
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const before = ok;
  const reloaded = await runToExit(['reload', name], { home, timeout: 60000 });
  const during = ok - before;
  // Under load until the reload was done (no loop ran out of its 5000 first).
  assert.equal(loopsDone, 0, 'the load lasted the whole reload');
  stop = true;
  await Promise.all(loops);
  assert.equal(reloaded.code, 0, reloaded.stderr);
  assert.deepEqual(failures, []);
  assert.ok(during > 0, 'requests were served during the reload');
  await stopCli(run);
});

test('a refused reload exits 1 with the reason and keeps the old workers', async () => {
  const dir = tempDir();
  const flag = path.join(dir, 'broken');
  const flaky = path.join(dir, 'flaky.js');
  fs.writeFileSync(flaky, `const fs = require('node:fs');
if (fs.existsSync(${JSON.stringify(flag)})) process.exit(3);
require('node:http').createServer((q, s) => s.end(String(process.pid))).listen(Number(process.env.PORT), '127.0.0.1');
`);
  const home = path.join(dir, 'home');
  const port = await freePort();
  const run = runCli(['-i', '2', flaky], { home, env: { PORT: String(port) } });
  await run.until(/listening on/, 2);
  const before = (await statusJson('flaky', home)).workers.map((w) => w.pid).sort();
  fs.writeFileSync(flag, '');
  const r = await runToExit(['reload', 'flaky'], { home });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^rcluster: reload flaky: replacement worker \d+ exited \(3\) before it was ready\n$/);
  assert.deepEqual((await statusJson('flaky', home)).workers.map((w) => w.pid).sort(), before);
  await stopCli(run);
});

test('home 0700, socket 0600, and another user is refused', async () => {
  const { home, run, name } = await start(['-i', '1'], { workers: 1 });
  assert.equal(fs.statSync(home).mode & 0o777, 0o700);
  const sock = path.join(home, `${name}.sock`);
  assert.ok(fs.statSync(sock).isSocket());
  assert.equal(fs.statSync(sock).mode & 0o777, 0o600);

  // The same command as uid 65534 (nobody): refused in one line.
  const asNobody = { uid: 65534, gid: 65534 };
  const denied = await runToExit(['status', name], { home, ...asNobody });
  assert.equal(denied.code, 1, denied.stderr);
  assert.match(denied.stderr, /^rcluster: permission denied: \S+ is owned by uid 0, not 65534\n$/);
  // And the kernel refuses it a connection to the socket itself.
  const raw = await new Promise((resolve) => {
    const code = `require('net').connect(${JSON.stringify(sock)})
      .on('connect', () => { console.log('connected'); process.exit(0); })
      .on('error', (e) => { console.log(e.code); process.exit(0); });`;
    const c = spawn(process.execPath, ['-e', code], { ...asNobody, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => { out += d; });
    c.on('close', () => resolve(out.trim()));
  });
  assert.equal(raw, 'EACCES');
  assert.equal((await statusJson(name, home)).workers.length, 1, 'the app carries on');
  await stopCli(run);
});

test('a home others can enter, or owned by someone else, is refused at start-up', async () => {
  const open = path.join(tempDir(), 'home');
  fs.mkdirSync(open, { mode: 0o755 });
  fs.chmodSync(open, 0o755);
  const r1 = await runToExit(['-i', '1', app], { home: open });
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, /^rcluster: \S+ is accessible to others \(mode 755; it must be 700\)\n$/);
  const foreign = path.join(tempDir(), 'home');
  fs.mkdirSync(foreign, { mode: 0o700 });
  fs.chownSync(foreign, 65534, 65534);
  const r2 = await runToExit(['-i', '1', app], { home: foreign });
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /^rcluster: permission denied: \S+ is owned by uid 65534, not 0\n$/);
});

test('a stale socket is replaced; a second live CLI of the same name refuses to start', async () => {
  const home = path.join(tempDir(), 'home');
  fs.mkdirSync(home, { mode: 0o700 });
  const sock = path.join(home, 'web.sock');
  // A CLI that died without cleaning up: its socket file is left behind.
  await new Promise((resolve) => {
    const code = `require('net').createServer()
      .listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawn(process.execPath, ['-e', code], { stdio: 'inherit' }).on('close', resolve);
  });
  assert.ok(fs.statSync(sock).isSocket());
  const port = await freePort();
  const run = runCli(['--name', 'web', '-i', '1', app], { home, env: { PORT: String(port) } });
  await run.until(/listening on/);
  assert.equal((await statusJson('web', home)).workers.length, 1);

  const second = await runToExit(['--name', 'web', '-i', '1', app], { home, env: { PORT: String(port) } });
  assert.equal(second.code, 1);
  assert.equal(second.stderr, `rcluster: an app named "web" is already running (${sock})\n`);
  assert.equal((await statusJson('web', home)).primary.pid, run.child.pid, 'the first one is untouched');
  await stopCli(run);
});

test('errors are one line each: unknown app, unknown command, bad arguments', async () => {
  const home = path.join(tempDir(), 'home');
  const cases = [
    [['status', 'nope'], 1, /^rcluster: no app named "nope" is running \(rcluster ls lists them\)$/],
    [['reload', 'nope'], 1, /^rcluster: no app named "nope" is running/],
    [['frobnicate'], 2,
      /^rcluster: cannot find app "frobnicate" .*, and no such command \(ls, status, reload, scale, stop, start\)$/],
    [['status'], 2, /^rcluster: status needs NAME$/],
    [['scale', 'web'], 2, /^rcluster: scale needs NAME and N$/],
    // N is checked as -i's count is, in the same words.
    [['scale', 'web', 'lots'], 2, /^rcluster: scale: "lots" is not a whole number$/],
    [['scale', 'web', '0'], 2, /^rcluster: scale: 0 is out of range \(1 to 1024\)$/],
    [['scale', 'web', '1025'], 2, /^rcluster: scale: 1025 is out of range \(1 to 1024\)$/],
    [['scale', 'web', '-1'], 2, /^rcluster: scale: "-1" is not a whole number$/],
    [['scale', 'web', '2.0'], 2, /^rcluster: scale: "2.0" is not a whole number$/],
    [['scale', 'web', '-x'], 2, /^rcluster: scale: unknown option -x$/],
    [['status', 'web', '--bogus'], 2, /^rcluster: status: unknown option --bogus$/],
    [['status', '../x'], 2, /^rcluster: status: "..\/x" is not a name/],
  ];
  for (const [args, code, expected] of cases) {
    const r = await runToExit(args, { home });
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], expected);
  }
  const ls = await runToExit(['ls'], { home });
  assert.deepEqual([ls.code, ls.stdout], [0, 'no apps running\n']);
});

test('a script named like a command runs with start or ./', async () => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'stop'), 'console.log("the stop script"); process.exit(0);\n');
  const home = path.join(dir, 'home');
  // After `start`, as a path, or after an option: only a first argument is a command.
  const ways = [['start', '-q', '-i', '1', 'stop'], ['-q', '-i', '1', './stop'], ['-q', '-i', '1', 'stop'],
    ['start', '-q', '-i', '1', '--', 'stop']];
  for (const args of ways) {
    const r = await runToExit(args, { home, cwd: dir });
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '[stop 0] the stop script\n', args.join(' '));
  }
  // `stop` alone is the command.
  const r = await runToExit(['stop', 'stop'], { home, cwd: dir });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no app named "stop" is running/);
});

test('status --watch redraws until SIGINT, and ends when the app stops', async () => {
  const { home, run, name } = await start(['-i', '1'], { workers: 1 });
  const watch = (extra = []) => runCli(['status', name, '--watch', ...extra], { home });
  const w1 = watch();
  await w1.until(/^SLOT/, 2, 'stdout');
  // The first frame shows CPU seconds, the next ones the share of a CPU since the last frame.
  const rows = (await w1.until(/^0\s+\d+\s+\d+\s+listening/, 2, 'stdout')).map((l) => l.split(/\s+/)[7]);
  assert.match(rows[0], /^\d+\.\d\ds$/);
  assert.match(rows[1], /^\d+%$/);
  await stopCli(w1, { signal: 'SIGINT' });

  // A reader that goes away (`| head`): the command ends quietly.
  const w3 = runCli(['status', name, '--watch'], { home, unreadStdout: true });
  w3.child.stdout.once('data', () => w3.child.stdout.destroy());
  assert.deepEqual(await w3.exited, { code: 0, signal: null });
  assert.equal(w3.text.stderr, '');

  const w2 = watch(['--json']);
  await w2.until(/"workers"/, 1, 'stdout');
  assert.equal((await runToExit(['stop', name], { home })).code, 0);
  assert.deepEqual(await w2.exited, { code: 0, signal: null });
  assert.match(w2.text.stdout, /web is no longer running\n$/);
  assert.equal((await run.exited).code, 0);
});

test('the protocol: versioned, unknown commands answered, a bad or overlong line ends the connection', async () => {
  const { home, run, name } = await start(['-i', '1'], { workers: 1 });
  const sock = path.join(home, `${name}.sock`);
  // Sends `data`; resolves with the answers (parsed lines) once `n` came or the server hung up.
  const exchange = (data, n) => new Promise((resolve) => {
    const s = net.connect(sock);
    let got = '';
    const lines = () => got.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    s.on('connect', () => s.write(data));
    s.setEncoding('utf8');
    s.on('data', (d) => {
      got += d;
      if (lines().length >= n) s.destroy();
    });
    s.on('error', () => {}); // a reset while we still write: the answer is what counts
    s.on('close', () => resolve(lines()));
    s.setTimeout(5000, () => s.destroy());
  });
  const requests = ['{"v":1,"id":1,"cmd":"info"}', '{"v":1,"id":2,"cmd":"rm -rf"}', '{"v":2,"id":3,"cmd":"info"}'];
  const answers = await exchange(`${requests.join('\n')}\n`, 3);
  assert.equal(answers.length, 3);
  const byId = Object.fromEntries(answers.map((a) => [a.id, a]));
  assert.deepEqual([byId[1].v, byId[1].ok, byId[1].result.name, byId[1].result.pid], [1, true, name, run.child.pid]);
  assert.deepEqual(byId[2], { v: 1, id: 2, ok: false,
    error: { name: 'Error', code: 'ERR_RCLUSTER_UNKNOWN_COMMAND', message: 'no such command "rm -rf"' } });
  assert.deepEqual(byId[3].error,
    { name: 'Error', code: 'ERR_RCLUSTER_PROTOCOL', message: 'protocol version 2 is not 1' });
  // Not JSON, and a line without end: one error answer, then the server hangs up and carries on.
  assert.deepEqual(await exchange('hello\n{"v":1,"id":9,"cmd":"info"}\n', 2), [{ v: 1, id: null, ok: false,
    error: { name: 'Error', code: 'ERR_RCLUSTER_PROTOCOL', message: 'a line that is not JSON' } }]);
  assert.deepEqual((await exchange('x'.repeat(2 * 1024 * 1024), 1)).map((a) => a.error),
    [{ name: 'Error', code: 'ERR_RCLUSTER_PROTOCOL', message: 'a line over 1048576 bytes' }]);
  assert.equal((await statusJson(name, home)).workers.length, 1);
  await stopCli(run);
});

// One request on a connection of its own; resolves with the answer.
// `write(socket)` sends the request its own way (in pieces, say).
function ask(sock, cmd, args, write = (s) => s.write(`${JSON.stringify({ v: 1, id: 1, cmd, args })}\n`)) {
  return new Promise((resolve, reject) => {
    const s = net.connect(sock);
    let got = '';
    s.setEncoding('utf8');
    s.on('connect', () => write(s));
    s.on('data', (d) => {
      got += d;
      if (got.endsWith('\n')) {
        s.destroy();
        resolve(JSON.parse(got));
      }
    });
    s.on('error', reject);
    s.setTimeout(10000, () => s.destroy(new Error(`no answer to ${cmd}: ${got}`)));
  });
}

test('a bad scale is refused with the error cluster.scale() throws; scale and reload while stopping are refused',
  async () => {
    const cluster = require('..');
    const thrown = (n) => {
      try {
        cluster.scale(n);
      } catch (err) {
        return { name: err.name, code: err.code, message: err.message };
      }
      return assert.fail(`cluster.scale(${n}) did not throw`);
    };
    const dir = tempDir();
    // Its workers stay after their disconnect, so a stop lasts until --kill-timeout: time to ask meanwhile.
    const linger = path.join(dir, 'linger.js');
    fs.writeFileSync(linger, `require('node:http').createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1');
setInterval(() => {}, 1000);
`);
    const home = path.join(dir, 'home');
    const run = runCli(['-i', '1', '--kill-timeout', '4s', linger], { home });
    await run.until(/listening on/);
    const sock = path.join(home, 'linger.sock');
    for (const n of [-1, 1.5, '3', null, undefined]) {
      const answer = await ask(sock, 'scale', { n });
      assert.equal(answer.ok, false, `n = ${n}`);
      assert.deepEqual(answer.error, thrown(n), `n = ${n}`);
    }
    // What the library takes but the CLI does not: in the same form.
    for (const n of [0, 1025]) {
      assert.deepEqual((await ask(sock, 'scale', { n })).error, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE',
        message: `The value of "n" is out of range. It must be an integer >= 1 && <= 1024. Received ${n}` });
    }
    assert.equal((await statusJson('linger', home)).workers.length, 1, 'nothing was scaled');

    const stopped = ask(sock, 'stop');
    await run.until(/stop requested: shutting down/);
    const stopping = { name: 'Error', code: 'ERR_RCLUSTER_STOPPING', message: 'the app is stopping' };
    assert.deepEqual((await ask(sock, 'scale', { n: 2 })).error, stopping);
    assert.deepEqual((await ask(sock, 'reload')).error, stopping);
    // The command prints the message, exit 1.
    const r = await runToExit(['scale', 'linger', '2'], { home });
    assert.deepEqual([r.code, r.stderr], [1, 'rcluster: scale linger: the app is stopping\n']);
    assert.deepEqual((await stopped).result, { stopped: true });
    assert.deepEqual(await run.exited, { code: 0, signal: null });
  });

test('a request in pieces is answered; a client that never writes neither blocks others nor keeps the CLI alive',
  async () => {
    const { home, port, run, name } = await start(['-i', '1'], { workers: 1 });
    const sock = path.join(home, `${name}.sock`);
    const idle = [];
    for (let i = 0; i < 20; i++) {
      const c = net.connect(sock);
      c.on('error', () => {});
      idle.push(new Promise((resolve) => c.on('close', resolve)));
    }
    // A request in two pieces, 200 ms apart, while 20 idle clients hold connections.
    const answer = await ask(sock, 'info', undefined, (c) => {
      c.write('{"v":1,"id":5,');
      setTimeout(() => c.write('"cmd":"info"}\n'), 200);
    });
    assert.deepEqual([answer.id, answer.ok, answer.result.name], [5, true, name]);
    assert.equal((await statusJson(name, home)).workers.length, 1, 'commands still work beside them');
    // Without --restart, a crash of the only worker ends the CLI (exit 1), idle clients or not.
    await get(port, '/crash').catch(() => {});
    const ended = await Promise.race([run.exited, new Promise((resolve) => setTimeout(resolve, 15000, 'still running'))]);
    assert.deepEqual(ended, { code: 1, signal: null });
    await Promise.all(idle); // cleanup, not a check: the CLI's exit closed them
  });
