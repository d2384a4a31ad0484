'use strict';
// Runs the node:test suites in __test__/ on this Node, then on every other
// Node installed as a dev dependency (node22, node24: the npm registry's
// `node` package).
//
//   node scripts/test.js [--only-current]
//
// (npm puts those packages' `node` shims first on PATH inside npm scripts, so
// package.json starts this with "$npm_node_execpath", the Node running npm.)
const { spawnSync } = require('node:child_process');
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

let failed = false;
const seen = new Set();
for (const node of nodes) {
  const version = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();
  if (seen.has(version)) continue;
  seen.add(version);
  process.stdout.write(`\n# node ${version}\n`);
  const env = { ...process.env, PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH}` };
  const r = spawnSync(node, ['--test', '--test-concurrency=1', ...files], { cwd: root, env, stdio: 'inherit' });
  if (r.status !== 0) {
    failed = true;
    process.stdout.write(`# suites failed on node ${version}\n`);
  }
}
process.exitCode = failed ? 1 : 0;
