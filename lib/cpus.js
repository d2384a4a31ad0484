'use strict';
// How many workers "max" means: the CPUs this process may run on (affinity),
// capped by the container's CPU quota (cgroup v2 `cpu.max`, or v1's CFS quota).

const fs = require('node:fs');
const os = require('node:os');

function readQuota(paths) {
  try {
    const [quota, period] = fs.readFileSync(paths.v2, 'utf8').trim().split(/\s+/);
    if (quota !== 'max' && Number(quota) > 0 && Number(period) > 0) return Number(quota) / Number(period);
    return Infinity;
  } catch {
    // cgroup v1
  }
  try {
    const quota = Number(fs.readFileSync(paths.v1Quota, 'utf8'));
    const period = Number(fs.readFileSync(paths.v1Period, 'utf8'));
    if (quota > 0 && period > 0) return quota / period;
  } catch {
    // no cgroup limits visible
  }
  return Infinity;
}

const DEFAULT_PATHS = {
  v2: '/sys/fs/cgroup/cpu.max',
  v1Quota: '/sys/fs/cgroup/cpu/cpu.cfs_quota_us',
  v1Period: '/sys/fs/cgroup/cpu/cpu.cfs_period_us',
};

function cpuCount({ paths = DEFAULT_PATHS, affinity = os.availableParallelism() } = {}) {
  const quota = readQuota(paths);
  return Math.max(1, Math.min(affinity, Math.ceil(quota)));
}

module.exports = { cpuCount };
