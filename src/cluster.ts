import cluster, { type Worker } from 'node:cluster';
import type { Logger } from './logger';

export interface PrimaryOptions {
  workers: number;
  /** How long SIGTERM waits for workers to drain before it kills them. */
  graceMs: number;
  logger: Logger;
}

/**
 * The primary of WORKERS=N: forks N copies of this program that share the listening port
 * (node:cluster hands connections round-robin), replaces a worker that dies, and on SIGTERM
 * or SIGINT passes the signal on so every worker drains, then exits 0 once all have exited
 * cleanly (1 if one of them had to cut requests).
 * The primary itself opens no database or Redis connection and serves nothing.
 */
export function runPrimary({ workers, graceMs, logger }: PrimaryOptions): void {
  let stopping = false;
  let unclean = false;
  // A worker that dies at once on every start (a bad configuration) must not be forked in a loop.
  const recentDeaths: number[] = [];

  // Our own record of live workers: cluster.workers drops a worker only after both its 'exit'
  // and 'disconnect', which may come in either order.
  const live = new Set<Worker>();
  const fork = (): void => {
    live.add(cluster.fork());
  };
  for (let i = 0; i < workers; i++) fork();
  logger.info({ workers }, 'primary started workers');

  cluster.on('exit', (worker, code, signal) => {
    live.delete(worker);
    if (stopping) {
      // A worker exits 0 when it drained in time (server.ts); the primary says the same.
      if (code !== 0) unclean = true;
      if (live.size === 0) {
        logger.info({ clean: !unclean }, 'all workers stopped');
        process.exit(unclean ? 1 : 0);
      }
      return;
    }
    const now = Date.now();
    recentDeaths.push(now);
    while (recentDeaths.length && recentDeaths[0]! < now - 10_000) recentDeaths.shift();
    if (recentDeaths.length > workers * 3) {
      logger.fatal({ code, signal }, 'workers keep dying; giving up');
      process.exit(1);
    }
    logger.warn({ pid: worker.process.pid, code, signal }, 'worker died; starting another');
    fork();
  });

  const kill = (why: string) => {
    logger.error(why);
    for (const worker of live) worker.process.kill('SIGKILL');
    process.exit(1);
  };
  const stop = (signal: NodeJS.Signals) => {
    // A second signal means "now", as for a single process.
    if (stopping) return kill(`${signal} again: killing the workers`);
    stopping = true;
    logger.info({ signal }, 'stopping workers');
    for (const worker of live) worker.process.kill('SIGTERM');
    // A worker drains for up to graceMs, then closes its stores (at least 1 s more): past
    // that it is stuck.
    setTimeout(() => kill('workers did not stop within the grace period; killing them'), graceMs + 3000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
