'use strict';
// Bad input gets the same error class and code as node:cluster gives, and
// never brings the primary down. Each case runs in a fresh primary, once with
// node:cluster and once with rcluster, and the outcomes are compared.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const path = require('node:path');

const fixture = path.join(__dirname, 'fixtures', 'errors-primary.js');

function run(caseName, module) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [fixture, caseName], {
      env: { ...process.env, CLUSTER_MODULE: module },
      timeout: 15000,
      killSignal: 'SIGKILL',
    }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop();
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`${module} ${caseName}: no result (${err && err.message})\n${stderr}`));
      }
    });
  });
}

const cases = [
  ['exec-not-string', 'ERR_INVALID_ARG_TYPE'],
  ['args-not-array', 'ERR_INVALID_ARG_TYPE'],
  ['serialization-bad', 'ERR_INVALID_ARG_VALUE'],
  ['stdio-without-ipc', 'ERR_CHILD_PROCESS_IPC_REQUIRED'],
  ['uid-not-number', 'ERR_INVALID_ARG_TYPE'],
  ['gid-fraction', 'ERR_INVALID_ARG_TYPE'],
  ['inspect-port-null', 'ERR_SOCKET_BAD_PORT'],
  ['inspect-port-range', 'ERR_SOCKET_BAD_PORT'],
  ['send-missing', 'ERR_MISSING_ARGS'],
  ['send-symbol', 'ERR_INVALID_ARG_TYPE'],
  ['send-bad-handle', 'ERR_INVALID_HANDLE_TYPE'],
  ['send-bad-options', 'ERR_INVALID_ARG_TYPE'],
  ['kill-unknown-signal', 'ERR_UNKNOWN_SIGNAL'],
  ['disconnect-twice', 'ERR_IPC_DISCONNECTED'],
  ['send-after-disconnect', 'ERR_IPC_CHANNEL_CLOSED'],
  ['spawn-bad-cwd', 'ENOENT'],
];

for (const [name, code] of cases) {
  test(`${name} → ${code}, as node:cluster`, async () => {
    const [ours, node] = await Promise.all([run(name, 'rcluster'), run(name, 'node')]);
    assert.equal(node.code, code, `node:cluster itself gave ${JSON.stringify(node)}`);
    assert.deepEqual(ours, node);
  });
}
