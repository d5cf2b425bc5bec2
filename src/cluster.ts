import cluster, { type Worker } from 'node:cluster';
import type { Logger } from './logger';
import { serveClusterMetrics } from './ops/metrics';
import {
  LIFECYCLE,
  PREPARE_ENV,
  READY_WAIT_MS,
  SignalLadder,
  lifecycleMessage,
  type LifecycleMessage,
  type ShutdownSignal,
} from './signals';

export interface PrimaryOptions {
  workers: number;
  /** How long SIGTERM waits for workers to drain before it kills them. */
  graceMs: number;
  /** SHUTDOWN_DELAY_MS: each worker's /readyz says 503 this long before it drains. */
  delayMs: number;
  /** SHUTDOWN_REPEAT_MS: the same signal again within this changes nothing. */
  repeatMs: number;
  logger: Logger;
}

/**
 * The primary of WORKERS=N: forks N copies of this program that share the listening port
 * (node:cluster hands connections round-robin), replaces a worker that dies, and on SIGTERM
 * or SIGINT passes the signal on so every worker drains, then exits 0 once all have exited
 * cleanly (1 if one of them had to cut requests). SIGHUP replaces the workers one at a time
 * (reload()). The primary itself opens no database or Redis connection and serves nothing.
 */
export function runPrimary({ workers, graceMs, delayMs, repeatMs, logger }: PrimaryOptions): void {
  let stopping = false;
  let unclean = false;
  // A worker that dies at once on every start (a bad configuration) must not be forked in a loop.
  const recentDeaths: number[] = [];

  // Our own record of live workers: cluster.workers drops a worker only after both its 'exit'
  // and 'disconnect', which may come in either order.
  const live = new Set<Worker>();
  const fork = (env?: Record<string, string>): Worker => {
    const worker = cluster.fork(env);
    live.add(worker);
    return worker;
  };
  // Workers whose exit is the reload's business, not a crash to answer with a new fork: new
  // ones not yet ready, old ones asked to drain, and the old one a new one is replacing.
  const reloadOwns = new Set<Worker>();
  // A worker stopped before it listened (one a reload was starting) cut no request.
  const listened = new WeakSet<Worker>();
  cluster.on('listening', (worker) => listened.add(worker));
  // A drained worker exits once its 'leaving' comes back (signals.ts, leaveSafely).
  cluster.on('message', (worker, message) => {
    if (lifecycleMessage(message) === 'leaving') send(worker, { [LIFECYCLE]: 'leaving' });
  });
  // A scrape reaches one worker; it asks here for every worker's metrics.
  serveClusterMetrics();
  for (let i = 0; i < workers; i++) fork();
  logger.info({ workers }, 'primary started workers');

  cluster.on('exit', (worker, code, signal) => {
    live.delete(worker);
    if (stopping) {
      // A worker exits 0 when it drained in time (server.ts); the primary says the same.
      if (code !== 0 && listened.has(worker)) unclean = true;
      if (live.size === 0) {
        logger.info({ clean: !unclean }, 'all workers stopped');
        process.exit(unclean ? 1 : 0);
      }
      return;
    }
    if (reloadOwns.delete(worker)) return;
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

  const exited = (worker: Worker) =>
    new Promise<void>((resolve) => (worker.isDead() ? resolve() : worker.once('exit', () => resolve())));
  const send = (worker: Worker, message: LifecycleMessage) => {
    if (worker.isConnected()) worker.send(message);
  };
  /** Resolves true once a new worker says it listens and is ready; false if it dies or takes too long. */
  const ready = (worker: Worker) =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => done(false), READY_WAIT_MS);
      const onMessage = (message: unknown) => lifecycleMessage(message) === 'ready' && done(true);
      const onExit = () => done(false);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('exit', onExit);
        resolve(ok);
      };
      worker.on('message', onMessage);
      worker.once('exit', onExit);
    });
  /** Asks a worker to drain without the delay (the primary's socket keeps accepting), and waits. */
  const retire = async (worker: Worker) => {
    reloadOwns.add(worker);
    send(worker, { [LIFECYCLE]: 'drain' });
    const timer = setTimeout(() => {
      logger.error({ pid: worker.process.pid }, 'old worker did not stop within the grace period; killing it');
      worker.process.kill('SIGKILL');
    }, graceMs + 3000);
    await exited(worker);
    clearTimeout(timer);
  };

  /**
   * Rolling reload: for each worker there was at the SIGHUP, fork a new one (running the build
   * on disk now), wait until it listens and its stores answer, then drain the old one and wait
   * for it to exit. At most one extra process, and always at least N-1 listening, so the
   * primary's socket stays open: nothing is refused.
   * - A new worker that dies or is not ready within READY_WAIT_MS aborts the reload: the new
   *   build does not start, the old workers keep serving (a later SIGHUP tries again).
   * - An old worker that dies meanwhile is not forked again by the crash path when it is the
   *   one being replaced (its new worker takes its place); any other is, as every crash is,
   *   and the reload then skips it.
   */
  const reloadOnce = async (): Promise<boolean> => {
    const old = [...live];
    logger.info({ workers: old.length }, 'reload: replacing the workers one at a time');
    let first = true;
    for (const previous of old) {
      if (stopping) return false;
      if (!live.has(previous)) continue; // died; the crash path already started another
      reloadOwns.add(previous);
      // The first new worker applies the new build's migrations before it listens.
      const fresh = fork(first ? { [PREPARE_ENV]: '1' } : undefined);
      first = false;
      reloadOwns.add(fresh);
      logger.info({ pid: fresh.process.pid, replaces: previous.process.pid }, 'reload: starting a new worker');
      const ok = await ready(fresh);
      reloadOwns.delete(fresh);
      if (stopping) return false;
      if (!ok) {
        reloadOwns.delete(previous);
        logger.error(
          { pid: fresh.process.pid, exitCode: fresh.process.exitCode },
          'reload aborted: a new worker did not become ready; the old workers keep serving',
        );
        if (!fresh.isDead()) void retire(fresh); // it may listen already: drain it, do not cut
        // The old worker it was to replace died meanwhile: replace it as any crash is.
        if (!live.has(previous)) fork();
        return false;
      }
      logger.info({ pid: fresh.process.pid, replaces: previous.process.pid }, 'reload: new worker ready');
      if (live.has(previous)) await retire(previous);
      else reloadOwns.delete(previous);
    }
    logger.info({ workers: live.size }, 'reload complete');
    return true;
  };

  let reloading = false;
  let queued = false;
  let lastHup = -Infinity;
  const reload = async () => {
    reloading = true;
    try {
      do {
        queued = false;
        await reloadOnce();
      } while (queued && !stopping);
    } finally {
      reloading = false;
    }
  };
  process.on('SIGHUP', () => {
    const now = performance.now();
    if (stopping) return logger.warn('SIGHUP ignored: stopping');
    if (now - lastHup < repeatMs) return logger.info({ repeatMs }, 'SIGHUP repeated: ignored');
    lastHup = now;
    if (reloading) {
      // The reload in progress started from an older build: replace every worker once more.
      queued = true;
      return logger.info('SIGHUP during a reload: another reload follows this one');
    }
    logger.info('SIGHUP: reloading');
    void reload();
  });

  const kill = (why: string) => {
    logger.error(why);
    for (const worker of live) worker.process.kill('SIGKILL');
    process.exit(1);
  };
  const ladder = new SignalLadder({ repeatMs, delayMs });
  const onSignal = (signal: ShutdownSignal) => {
    switch (ladder.decide(signal)) {
      case 'stop':
        stopping = true;
        logger.info({ signal, delayMs }, 'stopping workers');
        for (const worker of live) worker.process.kill('SIGTERM');
        // A worker waits delayMs, drains for up to graceMs, then closes its stores (at least
        // 1 s more): past that it is stuck.
        setTimeout(
          () => kill('workers did not stop within the grace period; killing them'),
          delayMs + graceMs + 3000,
        ).unref();
        return;
      case 'repeat':
        return logger.info(
          { signal, repeatMs },
          'shutdown signal repeated: ignored (a group-delivered signal arrives twice)',
        );
      case 'hurry':
        logger.warn({ signal }, 'second shutdown signal: workers skip the rest of the delay');
        for (const worker of live) send(worker, { [LIFECYCLE]: 'drain' });
        return;
      case 'exit':
        return kill(`second shutdown signal (${signal}) while draining: killing the workers`);
    }
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}
