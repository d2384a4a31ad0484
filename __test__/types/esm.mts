import cluster, {
  isPrimary, fork, SCHED_REUSEPORT, type ClusterSettings, type MetricsAddress, type MetricsOptions,
} from '../../index.mjs';

const settings: ClusterSettings = { exec: 'app.js' };
if (isPrimary) {
  cluster.setupPrimary(settings);
  cluster.schedulingPolicy = SCHED_REUSEPORT;
  fork().on('online', () => {});
  const endpoint: MetricsOptions = { port: 0 };
  cluster.setupPrimary({ metrics: endpoint, sticky: 'ip' });
  const where: MetricsAddress | null = cluster.metricsAddress();
  const family: 'IPv4' | 'IPv6' | undefined = where?.family;
  const stalls: number = cluster.stats().totals.stalls;
  void [family, stalls];
}
