'use strict';
// The npm package installs into a fresh app without a Rust toolchain when the
// platform package is there, and clusters a server from there, via CommonJS
// and ESM; its types compile there.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const platformDir = (() => {
  const { platform, arch } = process;
  const libc = platform === 'linux' ? (process.report.getReport().header.glibcVersionRuntime ? 'gnu' : 'musl') : '';
  return [platform, arch, libc].filter(Boolean).join('-');
})();
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
let work;
let child;

test.after(() => {
  if (child) child.kill('SIGKILL');
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

test('npm pack → install in a fresh app → clustered server and types (CJS and ESM)', { timeout: 120000 }, () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-pack-'));
  const binary = `rcluster.${platformDir}.node`;
  assert.ok(fs.existsSync(path.join(root, binary)), `${binary} is built`);

  // The platform package, as `napi artifacts` + publishing would ship it.
  const plat = path.join(work, 'platform');
  fs.cpSync(path.join(root, 'npm', platformDir), plat, { recursive: true });
  fs.copyFileSync(path.join(root, binary), path.join(plat, binary));
  const quiet = { cwd: work, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' };
  const platTgz = execFileSync(npm, ['pack', plat, '--silent'], quiet).trim().split('\n').pop();
  const mainTgz = execFileSync(npm, ['pack', root, '--ignore-scripts', '--silent'], quiet).trim().split('\n').pop();

  const files = execFileSync('tar', ['-tzf', path.join(work, mainTgz)], { encoding: 'utf8' });
  for (const f of ['index.js', 'index.mjs', 'index.d.ts', 'binding.js', 'lib/primary.js', 'bin/rcluster.js']) {
    assert.match(files, new RegExp(`package/${f.replace('.', '\\.')}`), `${f} is packed`);
  }
  assert.doesNotMatch(files, /\.node$/m, 'no native binary in the main package');
  assert.doesNotMatch(files, /src\/|__test__|target\//, 'no sources or tests packed');

  const app = path.join(work, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), '{"name":"app","version":"1.0.0","private":true}');
  // No Rust toolchain on PATH: installing must not need one.
  const PATH = process.env.PATH.split(path.delimiter).filter((p) => !/\.cargo|rustup/.test(p)).join(path.delimiter);
  execFileSync(npm, ['install', '--no-audit', '--no-fund', '--offline',
    path.join(work, platTgz), path.join(work, mainTgz)], { ...quiet, cwd: app, env: { ...process.env, PATH } });

  const server = `
    const cluster = require('rcluster');
    const http = require('node:http');
    if (cluster.isPrimary) {
      let n = 0;
      cluster.on('listening', (w, a) => {
        if (++n < 2) return;
        http.get({ host: '127.0.0.1', port: a.port, agent: false }, (res) => {
          let b = '';
          res.on('data', (d) => { b += d; }).on('end', () => {
            console.log('served by worker ' + b);
            cluster.disconnect();
          });
        });
      });
      cluster.fork(); cluster.fork();
    } else {
      http.createServer((q, s) => s.end(String(cluster.worker.id))).listen(0, '127.0.0.1');
    }`;
  fs.writeFileSync(path.join(app, 'server.js'), server);
  fs.writeFileSync(path.join(app, 'esm.mjs'),
    "import cluster, { isPrimary, SCHED_REUSEPORT } from 'rcluster';\n"
    + "console.log(isPrimary, SCHED_REUSEPORT, typeof cluster.fork);\n");
  const opts = { cwd: app, encoding: 'utf8', timeout: 30000 };
  assert.match(execFileSync(process.execPath, ['server.js'], opts), /^served by worker [12]$/m);
  assert.equal(execFileSync(process.execPath, ['esm.mjs'], opts).trim(), 'true 3 function');

  // TypeScript, as a consumer sees the installed package: @types/node is an optional peer, so it is not
  // installed with rcluster; the app brings its own (here, the repo's), and node:cluster code compiles.
  assert.ok(!fs.existsSync(path.join(app, 'node_modules', '@types', 'node')), '@types/node not installed by rcluster');
  const typesDir = path.join(app, 'node_modules', '@types');
  fs.mkdirSync(typesDir, { recursive: true });
  fs.symlinkSync(path.dirname(require.resolve('@types/node/package.json')), path.join(typesDir, 'node'), 'junction');
  const tsBody = `
    const w: Worker = cluster.fork();
    const p: ChildProcess = w.process;
    if (w instanceof Worker) w.on('exit', (code: number, signal: string) => void [code, signal, p, w.slot]);
    cluster.on('exit', (worker, code, signal) => void [worker.id, code + 1, signal.length]);
    void cluster.reload();
  `;
  const imports = "import cluster, { Worker } from 'rcluster';\n"
    + "import type { ChildProcess } from 'node:child_process';\n";
  fs.writeFileSync(path.join(app, 'check.ts'), imports + tsBody);
  fs.writeFileSync(path.join(app, 'check.mts'), imports + tsBody);
  fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, module: 'node16', moduleResolution: 'node16', types: ['node'] },
    files: ['check.ts', 'check.mts'],
  }));
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', app], opts);
  assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
});
