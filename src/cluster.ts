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

  const fork = (): Worker => cluster.fork();
  for (let i = 0; i < workers; i++) fork();
  logger.info({ workers }, 'primary started workers');

  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      // A worker exits 0 when it drained in time (server.ts); the primary says the same.
      if (code !== 0) unclean = true;
      if (Object.keys(cluster.workers ?? {}).length === 0) {
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

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping workers');
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    setTimeout(() => {
      logger.error('workers did not stop within the grace period; killing them');
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL');
      process.exit(1);
    }, graceMs + 1000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
