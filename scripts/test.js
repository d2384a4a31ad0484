'use strict';
// Runs the node:test suites in __test__/ on this Node, then on every other
// Node installed as a dev dependency (node22, node24: the npm registry's
// `node` package), and ends with one line totalling all runs.
//
//   node scripts/test.js [--only-current]
//
// (npm puts those packages' `node` shims first on PATH inside npm scripts, so
// package.json starts this with "$npm_node_execpath", the Node running npm.)
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const files = fs.readdirSync(path.join(root, '__test__'))
  .filter((f) => f.endsWith('.test.js'))
  .sort()
  .map((f) => path.join('__test__', f));

const nodes = [process.execPath];
if (!process.argv.includes('--only-current')) {
  for (const dep of ['node22', 'node24']) {
    const bin = path.join(root, 'node_modules', dep, 'bin', 'node');
    if (fs.existsSync(bin)) nodes.push(bin);
  }
}

// One run, its TAP output passed through; resolves with its counts.
function run(node) {
  return new Promise((resolve) => {
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
