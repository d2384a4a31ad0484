'use strict';
// The CLI clusters an app that knows nothing of clustering.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { cpuCount } = require('../lib/cpus');
const { isGone } = require('./helpers');
const { tempDir, freePort, runCli, runToExit, stopCli, get, workerPids } = require('./cli-helpers');

const app = path.join(__dirname, 'fixtures', 'cli-app.js');
// The HTTP body of the fixture app: the pid of the worker that answered.
const pidAt = async (port, urlPath) => Number((await get(port, urlPath)).body);

test('runs N workers, reloads on SIGHUP, stops gracefully on SIGTERM', async () => {
  const port = await freePort();
  const run = runCli(['-i', '2', app], { env: { PORT: String(port) } });
  const first = await run.until(/listening on 127\.0\.0\.1:/, 2);
  const before = first.map((l) => Number(/pid (\d+)/.exec(l)[1]));
  assert.equal(new Set(before).size, 2);
  assert.ok(before.includes(await pidAt(port)));

  run.child.kill('SIGHUP');
  await run.until(/reload complete/);
  const after = (await run.until(/listening on/, 4)).slice(2).map((l) => Number(/pid (\d+)/.exec(l)[1]));
  for (const pid of after) assert.ok(!before.includes(pid), 'new workers after reload');
  assert.ok(after.includes(await pidAt(port)));

  await stopCli(run);
  for (const pid of [...before, ...after]) assert.equal(isGone(pid), true, `worker ${pid} gone`);
});

test('--restart replaces a crashed worker', async () => {
  const port = await freePort();
  const run = runCli(['-i', '1', '--restart', app], { env: { PORT: String(port) } });
  await run.until(/listening on/);
  await get(port, '/crash').catch(() => {});
  await run.until(/exited \(code 7\)/);
  await run.until(/restarting slot 0/);
  await run.until(/listening on/, 2);
  assert.match((await get(port)).body, /^\d+$/);
  await stopCli(run, { signal: 'SIGINT' });
});

test('without --restart the CLI exits 1 once its workers crashed', async () => {
  const port = await freePort();
  const run = runCli(['-i', '1', app], { env: { PORT: String(port) } });
  await run.until(/listening on/);
  await get(port, '/crash').catch(() => {});
  assert.deepEqual(await run.exited, { code: 1, signal: null });
});

test('bad options exit 2 with a message', async () => {
  for (const args of [['--bogus', app], ['-i', 'lots', app], ['--hang-timeout', '-1', app], []]) {
    const result = await runToExit(args);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /^rcluster: /);
  }
});

test('each bad value is one line naming the flag as typed, exit 2', async () => {
  const cases = [
    [['-i', '0x2'], /^rcluster: -i: "0x2" is not a whole number or 'max'$/],
    [['-i', '2e0'], /^rcluster: -i: "2e0" is not a whole number/],
    [['-i', '2.0'], /^rcluster: -i: "2.0" is not a whole number/],
    [['--instances', ' 2'], /^rcluster: --instances: " 2" is not a whole number/],
    [['-i', '0'], /^rcluster: -i: 0 is out of range \(1 to 1024, or max\)$/],
    [['-i', '-1'], /^rcluster: -i: "-1" is not a whole number/],
    [['-i', '100000'], /^rcluster: -i: 100000 is out of range \(1 to 1024/],
    [['-i', '1025'], /^rcluster: -i: 1025 is out of range/],
    [['--max-memory', '12X'], /^rcluster: --max-memory: "12X" is not a size \(use e\.g\. 512M, 1G\)$/],
    [['--max-memory', '0x10'], /^rcluster: --max-memory: "0x10" is not a size/],
    [['--max-memory', '1e9'], /^rcluster: --max-memory: "1e9" is not a size/],
    [['--max-memory', '0'], /^rcluster: --max-memory: 0 is out of range/],
    [['--max-memory', '0M'], /^rcluster: --max-memory: 0M is out of range/],
    [['--hang-timeout', '0'], /^rcluster: --hang-timeout: 0 is out of range/],
    [['--hang-timeout', '1e3'], /^rcluster: --hang-timeout: "1e3" is not a duration/],
    [['--max-age', '0x10'], /^rcluster: --max-age: "0x10" is not a duration/],
    [['--max-age', '0s'], /^rcluster: --max-age: 0s is out of range/],
    [['--kill-timeout', '1.5'], /^rcluster: --kill-timeout: "1.5" is not a duration/],
    [['--kill-timeout', '0'], /^rcluster: --kill-timeout: 0 is out of range/],
    [['--kill-timeout', '25d'], /^rcluster: --kill-timeout: "25d" is not a duration/],
    // setTimeout fires at once beyond 2^31-1 ms: that would be no grace at all.
    [['--kill-timeout', '2147483648'], /^rcluster: --kill-timeout: 2147483648 is out of range \(1ms to 2147483647ms\)/],
    [['--policy', 'fifo'], /^rcluster: --policy: "fifo" is not reuseport, rr or none$/],
    [['--log-format', 'xml'], /^rcluster: --log-format: "xml" is not prefix, json or raw$/],
    [['--name', 'a/b'], /^rcluster: --name: "a\/b" is not a name \(letters, digits, _ \. -; at most 64\)$/],
    [['--name', '.hidden'], /^rcluster: --name: ".hidden" is not a name/],
    [['--max-restarts', '-1'], /^rcluster: --max-restarts: "-1" is not a whole number$/],
    // The library's own bound (options.restart.maxRestarts), in the flag's words.
    [['--max-restarts', '4294967296'], /^rcluster: --max-restarts: 4294967296 is out of range \(0 to 4294967295\)$/],
    [['--sticky', 'cookie'], /^rcluster: --sticky: "cookie" is not ip$/],
  ];
  const runs = cases.map(([args, expected]) => [[...args, app], expected]);
  runs.push([['-i'], /^rcluster: -i needs a value$/]);
  for (const [args, expected] of runs) {
    const result = await runToExit(args);
    const what = `${args.join(' ')}: ${result.stderr}`;
    assert.equal(result.code, 2, what);
    const lines = result.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, what);
    assert.match(lines[0], expected, what);
    assert.doesNotMatch(lines[0], /options\./, what);
  }
});

test('--sticky ip with --policy none is refused in one line, exit 2, and no worker starts', async () => {
  const result = await runToExit(['--policy', 'none', '--sticky', 'ip', app]);
  assert.equal(result.code, 2, result.stderr);
  const lines = result.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0], /^rcluster: .*sticky.* cannot be used with SCHED_NONE/);
  assert.doesNotMatch(result.stderr + result.stdout, /forked|listening/);
});

test('valid sizes and durations with units are accepted', async () => {
  const port = await freePort();
  const run = runCli(['-i', '1', '--max-memory', '512M', '--max-age', '1h', '--hang-timeout', '30s',
    '--kill-timeout', '5000ms', app], { env: { PORT: String(port) } });
  await run.until(/listening on/);
  assert.match((await get(port)).body, /^\d+$/);
  await stopCli(run);
});

test('a missing app is one line naming it, exit 2, and no worker starts', async () => {
  const dir = tempDir();
  const pids = path.join(dir, 'pids');
  fs.mkdirSync(pids);
  const result = await runToExit(['-i', '2', 'nope.js'], { cwd: dir, env: { PID_DIR: pids } });
  assert.equal(result.code, 2, result.stderr);
  assert.equal(result.stderr, `rcluster: cannot find app "nope.js" (looked for ${path.join(dir, 'nope.js')})\n`);
  assert.deepEqual(fs.readdirSync(pids), []);
});

test('the app is found the way `node app` finds it', async () => {
  const dir = tempDir();
  // Each app prints its name and leaves, so the CLI exits 0 once its one worker has.
  const leave = (name) => `console.log(${JSON.stringify(name)}); process.exit(0);\n`;
  fs.writeFileSync(path.join(dir, 'plain.js'), leave('plain'));
  fs.mkdirSync(path.join(dir, 'withindex'));
  fs.writeFileSync(path.join(dir, 'withindex', 'index.js'), leave('index'));
  fs.mkdirSync(path.join(dir, 'withmain', 'lib'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'withmain', 'package.json'), '{"main": "lib/start.js"}');
  fs.writeFileSync(path.join(dir, 'withmain', 'lib', 'start.js'), leave('main'));
  fs.writeFileSync(path.join(dir, 'esm.mjs'), leave('mjs'));
  fs.writeFileSync(path.join(dir, 'common.cjs'), leave('cjs'));
  const cases = [['plain', 'plain'], ['plain.js', 'plain'], ['withindex', 'index'], ['./withindex/', 'index'],
    ['withmain', 'main'], ['esm.mjs', 'mjs'], ['common.cjs', 'cjs']];
  for (const [appArg, printed] of cases) {
    const result = await runToExit(['-q', '-i', '1', '--log-format', 'raw', appArg], { cwd: dir });
    assert.equal(result.code, 0, `${appArg}: ${result.stderr}`);
    assert.equal(result.stdout, `${printed}\n`, appArg);
  }
  // Node adds no extension but .js: `node esm` fails, so does the CLI.
  const result = await runToExit(['-i', '1', 'esm'], { cwd: dir });
  assert.equal(result.code, 2);
  assert.match(result.stderr, /^rcluster: cannot find app "esm"/);
});

test('SIGTERM during start-up stops the workers started so far and exits 0', async () => {
  const dir = tempDir();
  try {
    // 64 forks take seconds here (tens of ms each): the signal lands well inside the start-up.
    const run = runCli(['-i', '64', app], { env: { PID_DIR: dir } });
    // The first line about a worker ('forked'; main today has only 'online', after all forks).
    await run.until(/\(pid \d+, slot \d+\) (forked|online)$/);
    await stopCli(run, { ms: 30000 });
    const stderr = run.text.stderr;
    assert.match(stderr, /SIGTERM: shutting down/);
    assert.match(stderr, /all workers stopped/);
    const reported = [...new Set([...stderr.matchAll(/\(pid (\d+), slot \d+\)/g)].map((m) => Number(m[1])))];
    assert.ok(reported.length >= 1 && reported.length < 64, `started ${reported.length} of 64 before stopping`);
    const ran = fs.readdirSync(dir).map(Number);
    for (const pid of ran) assert.ok(reported.includes(pid), `worker ${pid} was reported`);
    for (const pid of reported) assert.equal(isGone(pid), true, `worker ${pid} gone`);
  } finally {
    for (const name of fs.readdirSync(dir)) workerPids.add(Number(name)); // killed after the file's tests if left
  }
});

test('-i max honours the CPU quota and affinity', () => {
  const dir = tempDir('rcluster-cpus-');
  const v2 = path.join(dir, 'cpu.max');
  const paths = { v2, v1Quota: path.join(dir, 'nope'), v1Period: path.join(dir, 'nope') };
  fs.writeFileSync(v2, 'max 100000\n');
  assert.equal(cpuCount({ paths, affinity: 8 }), 8);
  fs.writeFileSync(v2, '150000 100000\n');
  assert.equal(cpuCount({ paths, affinity: 8 }), 2);
  fs.writeFileSync(v2, '50000 100000\n');
  assert.equal(cpuCount({ paths, affinity: 8 }), 1);
  fs.writeFileSync(v2, '800000 100000\n');
  assert.equal(cpuCount({ paths, affinity: 2 }), 2);
  assert.ok(cpuCount() >= 1);
});

test('--help and README\'s CLI tables list exactly the flags and commands the parser knows', () => {
  const { OPTIONS, USAGE } = require('../lib/cli/options');
  const { COMMANDS } = require('../lib/cli/commands');
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const start = readme.indexOf('\n## CLI\n');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  // The first cell of each table row.
  const firstCells = section.split('\n').filter((l) => l.startsWith('| `')).map((l) => l.split(' | ')[0]);
  const documented = new Set(firstCells.flatMap((c) => c.match(/(?<![\w-])--?[a-z][a-z-]*/g) || []));
  const known = new Set([...OPTIONS.flatMap((o) => o.flags), '-h', '--help', '-v', '--version', '--json', '--watch']);
  for (const flag of known) {
    assert.ok(documented.has(flag), `README's CLI tables lack ${flag}`);
    assert.match(USAGE, new RegExp(`(?<![\\w-])${flag}(?![\\w-])`), `--help lacks ${flag}`);
  }
  for (const flag of documented) assert.ok(known.has(flag), `README documents ${flag}, which the parser does not know`);
  for (const cmd of [...COMMANDS, 'start']) {
    assert.ok(firstCells.some((c) => c.startsWith(`| \`${cmd}`)), `README's command table lacks ${cmd}`);
  }
});
