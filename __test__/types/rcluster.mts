// rcluster by package name from ESM: named imports, and the Worker type with rcluster's additions.
import cluster, { Worker, fork, isPrimary, SCHED_REUSEPORT, workers, type WorkerStats } from 'rcluster';

if (isPrimary) {
  const w: Worker = fork();
  const slot: number | undefined = w.slot;
  const again: Worker | undefined = workers?.[w.id];
  cluster.schedulingPolicy = SCHED_REUSEPORT;
  const stats: WorkerStats[] = cluster.stats().workers;
  const worker: Worker = new Worker({ id: 1 });
  void [slot, again, stats, worker];
  // @ts-expect-error scale takes a number
  void cluster.scale('2');
}
