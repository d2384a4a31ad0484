import cluster, { isPrimary, fork, SCHED_REUSEPORT, type ClusterSettings } from '../../index.mjs';

const settings: ClusterSettings = { exec: 'app.js' };
if (isPrimary) {
  cluster.setupPrimary(settings);
  cluster.schedulingPolicy = SCHED_REUSEPORT;
  fork().on('online', () => {});
}
