'use strict';
// Ecosystem files: PM2's keys and rcluster's own, one foreground CLI per app.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { once } = require('node:events');
const { tempDir, freePort, runCli, runToExit, get, statusJson, stopCli } = require('./cli-helpers');
const { isGone } = require('./helpers');

const app = path.join(__dirname, 'fixtures', 'cli-app.js');

test('a PM2 ecosystem file with two apps: each runs with its own socket; unsupported keys warned once', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const [portA, portB] = [await freePort(), await freePort()];
  fs.mkdirSync(path.join(dir, 'srv'));
  fs.copyFileSync(app, path.join(dir, 'srv', 'server.js'));
  const file = path.join(dir, 'ecosystem.config.js');
  fs.writeFileSync(file, `module.exports = {
  apps: [
    { name: 'alpha', script: 'server.js', cwd: 'srv', instances: 1, exec_mode: 'cluster', env: { PORT: ${portA} },
      max_memory_restart: '300M', kill_timeout: 3000, listen_timeout: 8000, watch: true, cron_restart: '0 * * * *',
      merge_logs: true },
    { name: 'beta', exec: ${JSON.stringify(app)}, instances: 2, exec_mode: 'cluster_mode', port: ${portB},
      node_args: '--max-old-space-size=256', exp_backoff_restart_delay: 100, max_restarts: 5, min_uptime: '2s',
      watch: ['lib'] },
  ],
};
`);
  const run = runCli([file], { home });
  await run.until(/listening on 127\.0\.0\.1:/, 3);
  const ls = JSON.parse((await runToExit(['ls', '--json'], { home })).stdout);
  assert.deepEqual(ls.map((a) => [a.name, a.workers]), [['alpha', 1], ['beta', 2]]);
  assert.equal(ls[0].app, path.join(dir, 'srv', 'server.js'), 'script resolved against cwd');
  const a = await statusJson('alpha', home);
  const b = await statusJson('beta', home);
  assert.equal(a.workers.length, 1);
  assert.equal(b.workers.length, 2);
  assert.ok(a.workers.map((w) => String(w.pid)).includes((await get(portA)).body), 'env.PORT reached alpha');
  assert.ok(b.workers.map((w) => String(w.pid)).includes((await get(portB)).body), 'env.PORT reached beta');
  // node_args reach the workers: their V8 heap limit is what beta asked for.
  const heap = fs.readFileSync(`/proc/${b.workers[0].pid}/cmdline`, 'utf8').split('\0');
  assert.ok(heap.includes('--max-old-space-size=256'), heap.join(' '));

  const warnings = run.text.stderr.split('\n').filter((l) => /does not support/.test(l));
  assert.deepEqual(warnings, [
    'rcluster: ecosystem.config.js: rcluster does not support watch (ignored; see docs/MIGRATING.md)',
    'rcluster: ecosystem.config.js: rcluster does not support cron_restart (ignored; see docs/MIGRATING.md)',
  ]);
  // Lines of both apps, attributed by their own CLI.
  assert.match(run.text.stderr, /^\[rcluster\] worker \d+ \(pid \d+, slot 1\) listening on 127\.0\.0\.1:\d+$/m);

  // SIGHUP to the ecosystem's CLI reloads every app.
  run.child.kill('SIGHUP');
  await run.until(/^\[rcluster\] reload complete$/, 2);
  const fresh = (await statusJson('beta', home)).workers.map((w) => w.pid);
  assert.equal(fresh.length, 2);
  assert.ok(fresh.every((pid) => !b.workers.some((w) => w.pid === pid)), 'beta has new workers');
  // Stopping one app leaves the other running; SIGTERM then stops the rest.
  assert.equal((await runToExit(['stop', 'alpha'], { home })).code, 0);
  assert.equal((await statusJson('beta', home)).workers.length, 2);
  await stopCli(run);
  for (const pid of [...a.workers, ...b.workers].map((w) => w.pid).concat(fresh)) assert.equal(isGone(pid), true);
  assert.deepEqual(fs.readdirSync(home), []);
});

test('an ecosystem runner killed with SIGKILL: its apps stop their workers and exit', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const port = await freePort();
  // Each worker notes at exit whether the primary took it down gracefully.
  const mark = path.join(dir, 'exits');
  const script = path.join(dir, 'orphan.js');
  fs.writeFileSync(script, `const cluster = require('node:cluster');
require('node:http').createServer((q, s) => s.end(String(process.pid))).listen(process.env.PORT, '127.0.0.1');
process.on('exit', () => require('node:fs').appendFileSync(process.env.MARK,
  process.pid + ' ' + cluster.worker.exitedAfterDisconnect + '\\n'));
`);
  const file = path.join(dir, 'ecosystem.config.json');
  fs.writeFileSync(file, JSON.stringify({ apps: [{ name: 'orphan', script, instances: 2, env: { PORT: port, MARK: mark } }] }));
  const run = runCli([file], { home });
  await run.until(/listening on 127\.0\.0\.1:/, 2);
  const [info] = JSON.parse((await runToExit(['ls', '--json'], { home })).stdout);
  const { workers } = await statusJson('orphan', home);
  assert.equal(workers.length, 2);
  run.child.kill('SIGKILL');
  await run.exited;
  // Nothing signals the app's CLI: it sees the runner's pipe end.
  // The CLI outlives its workers (it waits for them), though its stdout and stderr, pipes to the dead
  // runner, now fail with EPIPE: each look checks the CLI first, so it is never seen gone before them.
  const workerPids = workers.map((w) => w.pid);
  for (const deadline = Date.now() + 15000; !isGone(info.pid) && Date.now() < deadline;) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const alive = workerPids.filter((pid) => !isGone(pid));
  assert.ok(isGone(info.pid), 'the app CLI is gone');
  assert.deepEqual(alive, [], 'its workers were gone before it');
  // A graceful stop (the CLI's stdout and stderr, pipes to the dead runner, fail with EPIPE meanwhile).
  const exits = fs.readFileSync(mark, 'utf8').trim().split('\n').sort();
  assert.deepEqual(exits, workers.map((w) => `${w.pid} true`).sort());
  assert.deepEqual(fs.readdirSync(home), [], 'its control socket is removed');
});

test("an app CLI whose runner is gone stops cleanly although its stdout and stderr now fail with EPIPE", async () => {
  // The runner's side: this test holds the pipes; the child is watchRunner as run.js uses it.
  const fleet = path.join(__dirname, '..', 'lib', 'cli', 'fleet.js');
  const child = spawn(process.execPath, ['-e', `
    require(${JSON.stringify(fleet)}).watchRunner(() => {
      process.stderr.write('[rcluster] the ecosystem runner is gone: shutting down\\n');
      process.stdout.write('a last line\\n');
      setTimeout(() => process.exit(0), 200);
    });
    setInterval(() => {}, 1000);`], {
    env: { ...process.env, RCLUSTER_FLEET_FD: '3' },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  try {
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.stdout.destroy();
    child.stderr.destroy();
    child.stdio[3].destroy();
    const [code, signal] = await once(child, 'exit');
    assert.deepEqual({ code, signal }, { code: 0, signal: null });
  } finally {
    child.kill('SIGKILL');
  }
});

test('rcluster.config.js with the CLI\'s option names, and a .json ecosystem file', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const port = await freePort();
  const native = path.join(dir, 'rcluster.config.js');
  fs.writeFileSync(native, `module.exports = { apps: [{ name: 'nat', script: ${JSON.stringify(app)}, instances: 2,
    restart: true, killTimeout: '5s', 'log-format': 'json', env: { PORT: '${port}' }, colour: 'blue' }] };`);
  const run = runCli([native], { home });
  await run.until(/listening on/, 2);
  assert.equal((await statusJson('nat', home)).workers.length, 2);
  assert.match(run.text.stderr, /^rcluster: rcluster\.config\.js: ignoring unknown key "colour"$/m);
  await stopCli(run);

  const json = path.join(dir, 'apps.json');
  fs.writeFileSync(json, JSON.stringify({ apps: [{ name: 'js', script: app, instances: 1, env: { PORT: port } }] }));
  const run2 = runCli([json], { home });
  await run2.until(/listening on/, 1);
  assert.equal((await statusJson('js', home)).workers.length, 1);
  await stopCli(run2, { signal: 'SIGINT' });
});

test('a bad value in an ecosystem file is one line naming the app, exit 2, and nothing starts', async () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  const cases = [
    [{ apps: [{ name: 'a', script: app, kill_timeout: 0 }] },
      /^rcluster: bad\.json: app "a": --kill-timeout: 0 is out of range/],
    [{ apps: [{ name: 'a', script: 'nope.js' }] }, /^rcluster: bad\.json: app "a": cannot find app "nope\.js"/],
    [{ apps: [{ name: 'a', script: app }, { name: 'a', script: app }] },
      /^rcluster: bad\.json: app "a": the name "a" is used twice\n$/],
    [{ apps: [{ name: 'a' }] }, /^rcluster: bad\.json: app "a": has no script\n$/],
    [{ apps: [] }, /^rcluster: \S+bad\.json lists no apps/],
  ];
  for (const [content, expected] of cases) {
    fs.writeFileSync(path.join(dir, 'bad.json'), JSON.stringify(content));
    const r = await runToExit([path.join(dir, 'bad.json')], { home });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
    assert.match(r.stderr, expected);
  }
  // The apps' arguments are their `args`: one after the file is refused, not dropped.
  fs.writeFileSync(path.join(dir, 'ok.json'), JSON.stringify({ apps: [{ name: 'a', script: app }] }));
  const extra = await runToExit([path.join(dir, 'ok.json'), '--port', '3000'], { home });
  assert.equal(extra.code, 2, extra.stderr);
  assert.equal(extra.stderr, 'rcluster: unexpected argument "--port" after the ecosystem file\n');
  assert.equal(fs.existsSync(home), false, 'no app started');
});

test('the example ecosystem files translate to the intended command lines', () => {
  const { appsOf } = require('../lib/cli/ecosystem');
  const dir = path.join(__dirname, '..', 'examples', 'ecosystem');
  const warnings = [];
  const pm2 = appsOf(path.join(dir, 'ecosystem.config.js'), { warn: (l) => warnings.push(l) });
  assert.deepEqual(warnings, []);
  assert.deepEqual(pm2.map((a) => a.name), ['api', 'web']);
  assert.deepEqual(pm2[0].argv, ['--name', 'api', '--instances', 'max', '--max-memory', '512M',
    '--kill-timeout', '5000', '--listen-timeout', '10000', '--restart-delay', '100', '--max-restarts', '10',
    '--min-uptime', '5s', '--restart', '--', path.join(dir, 'app.js')]);
  assert.deepEqual(pm2[0].env, { PORT: '3000', APP_NAME: 'api' });
  assert.deepEqual(pm2[1].nodeArgs, ['--max-old-space-size=512']);
  assert.ok(pm2[1].argv.join(' ').includes('--log-format json'));
  // Without `instances` PM2 starts one; an -i typed before the file applies to such apps.
  const { parseFlags } = require('../lib/cli/options');
  const bare = path.join(tempDir(), 'bare.config.js');
  fs.writeFileSync(bare, `module.exports = { apps: [{ name: 'b', script: ${JSON.stringify(app)} },
    { name: 'c', script: ${JSON.stringify(app)}, instances: 2 }] };`);
  const instances = (apps) => apps.map((a) => parseFlags(a.argv).opts.instances);
  assert.deepEqual(instances(appsOf(bare)), [1, 2]);
  assert.deepEqual(instances(appsOf(bare, { baseFlags: ['-i', '3'] })), [3, 2]);
  const native = appsOf(path.join(dir, 'rcluster.config.js'), { warn: (l) => warnings.push(l) });
  assert.deepEqual(warnings, []);
  assert.deepEqual(native[0].argv, ['--name', 'api', '--instances', 'max', '--restart', '--hang-timeout', '5s',
    '--max-memory', '512M', '--kill-timeout', '5s', '--log-format', 'json', '--', path.join(dir, 'app.js')]);
});

test('every ecosystem key resolves as its option\'s flags do, in both formats; another spelling as its key', () => {
  const { appsOf, PM2_KEYS, resolveKey } = require('../lib/cli/ecosystem');
  const { OPTIONS, parseFlags } = require('../lib/cli/options');
  const dir = tempDir();
  // JSON files: read afresh each time (a .js one would come from require's cache).
  const pm2File = path.join(dir, 'ecosystem.config.json');
  const nativeFile = path.join(dir, 'rcluster.config.json');
  const through = (file, entry) => {
    fs.writeFileSync(file, JSON.stringify({ apps: [entry] }));
    const warnings = [];
    const [parsed] = appsOf(file, { warn: (l) => warnings.push(l) });
    return { parsed, warnings, opts: parseFlags(parsed.argv).opts };
  };
  // A valid value of each option as a file holds it; a switch is true.
  const samples = {
    instances: 3, name: 'x', restart: true, restartDelay: 100, maxRestarts: 5, minUptime: '2s', hangTimeout: '5s',
    maxMemory: '300M', maxAge: '1h', killTimeout: 3000, listenTimeout: '8s', policy: 'rr', logFormat: 'json',
    metrics: '127.0.0.1:9100', sticky: 'ip', quiet: true,
  };
  const pm2Names = Object.keys(PM2_KEYS).filter((k) => PM2_KEYS[k].option);
  for (const k of pm2Names) assert.ok(OPTIONS.some((o) => o.key === PM2_KEYS[k].option), `${k} names an option`);
  for (const o of OPTIONS) {
    assert.ok(Object.hasOwn(samples, o.key), `a sample value for ${o.key}`);
    const v = samples[o.key];
    const typed = o.flags.map((f) => parseFlags([f, ...(o.parse ? [String(v)] : []), '--', app]).opts[o.key]);
    const want = typed[0];
    assert.notDeepEqual(want, parseFlags(['--', app]).opts[o.key], `${o.key}: the sample is not the default`);
    for (const [i, got] of typed.entries()) assert.deepEqual(got, want, o.flags[i]);
    const long = o.flags.at(-1).slice(2);
    const camel = long.replace(/-([a-z])/g, (m, c) => c.toUpperCase());
    for (const key of new Set([long, camel])) {
      const r = through(nativeFile, { script: app, [key]: v });
      assert.deepEqual([r.opts[o.key], r.warnings], [want, []], `rcluster.config: ${key}`);
    }
    for (const key of pm2Names.filter((k) => PM2_KEYS[k].option === o.key)) {
      const r = through(pm2File, { script: app, [key]: v });
      assert.deepEqual([r.opts[o.key], r.warnings], [want, []], `PM2: ${key}`);
    }
  }
  // PM2's other spellings: the same app as with the key they stand for, warnings included.
  const launchSamples = { script: app, interpreter_args: '--max-old-space-size=128', interpreter: 'python3' };
  const spellings = Object.keys(PM2_KEYS).filter((k) => PM2_KEYS[k].same);
  assert.ok(spellings.length > 0);
  for (const alias of spellings) {
    const key = PM2_KEYS[alias].same;
    assert.equal(resolveKey(alias, false).key, key);
    assert.ok(Object.hasOwn(launchSamples, key), `a sample value for ${key}`);
    const base = key === 'script' ? {} : { script: app };
    const asAlias = through(pm2File, { ...base, [alias]: launchSamples[key] });
    const asKey = through(pm2File, { ...base, [key]: launchSamples[key] });
    assert.deepEqual(asAlias, asKey, alias);
    // Both given: the key's own spelling wins.
    const both = through(pm2File, { ...base, [alias]: 'other', [key]: launchSamples[key] });
    assert.deepEqual(both, asKey, `${alias} and ${key}`);
  }
});
