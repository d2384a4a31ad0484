'use strict';
// Where control sockets live, and the check that only their owner can reach
// them. Node cannot ask a Unix socket for its peer's uid (no SO_PEERCRED), so
// the kernel's permission checks are the gate: the directory is 0700 and owned
// by the user, each socket 0600. A directory anyone else owns or can enter is
// refused rather than repaired: someone could be holding a socket in it.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const SUFFIX = '.sock';

class HomeError extends Error {}

function homeDir(env = process.env) {
  if (env.RCLUSTER_HOME) return path.resolve(env.RCLUSTER_HOME);
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'rcluster');
  return path.join(os.homedir(), '.rcluster');
}

// Throws a HomeError when `dir` is not a private directory of ours.
function checkPrivate(dir) {
  let st;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if (err.code === 'EACCES') throw new HomeError(`permission denied: ${dir} belongs to another user`);
    throw err;
  }
  if (!st.isDirectory()) throw new HomeError(`${dir} is not a directory (set RCLUSTER_HOME)`);
  const uid = process.getuid();
  if (st.uid !== uid) throw new HomeError(`permission denied: ${dir} is owned by uid ${st.uid}, not ${uid}`);
  if ((st.mode & 0o077) !== 0) {
    throw new HomeError(`${dir} is accessible to others (mode ${(st.mode & 0o777).toString(8)}; it must be 700)`);
  }
}

// The directory, created 0700 when missing (the CLI that serves does this).
function ensureHome(env = process.env) {
  const dir = homeDir(env);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    if (err.code !== 'EEXIST') throw new HomeError(`cannot create ${dir}: ${err.message}`);
  }
  checkPrivate(dir);
  return dir;
}

function socketPath(dir, name) {
  return path.join(dir, `${name}${SUFFIX}`);
}

// Names of the sockets in `dir` (live or stale: the caller asks them).
function listNames(dir) {
  let entries;
  try {
    entries = fs.readdirSync(dir);
  } catch (err) {
    if (err.code === 'ENOENT') return [];
    if (err.code === 'EACCES') throw new HomeError(`permission denied: ${dir} belongs to another user`);
    throw err;
  }
  return entries.filter((f) => f.endsWith(SUFFIX)).map((f) => f.slice(0, -SUFFIX.length)).sort();
}

module.exports = { homeDir, ensureHome, checkPrivate, socketPath, listNames, HomeError };
