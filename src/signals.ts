import cluster from 'node:cluster';
import type { Logger } from './logger';

export type ShutdownSignal = 'SIGTERM' | 'SIGINT';

/**
 * What a shutdown signal means at the moment it arrives:
 * - `stop`: the first one; begin the graceful stop (the delay, then the drain);
 * - `repeat`: the signal that started the current step again within SHUTDOWN_REPEAT_MS: the
 *   echo of a group-delivered signal, which changes nothing;
 * - `hurry`: any other one while the delay still runs: skip what is left of it and drain now;
 * - `exit`: any other one while draining: give up on the requests in flight and exit now.
 */
export type Decision = 'stop' | 'repeat' | 'hurry' | 'exit';

/**
 * A signal sent to a whole process group (Ctrl-C in a terminal, `kill -- -PGID`, systemd's
 * KillMode=control-group, container runtimes that signal every process) reaches this process
 * directly and once more through npm, which forwards SIGINT and SIGTERM to its child. That
 * second copy, milliseconds later, is not an operator insisting: only a signal the process has
 * not just seen escalates.
 */
export class SignalLadder {
  private startedAt?: number;
  private last?: { signal: string; at: number };
  private hurried = false;

  constructor(private readonly opts: { repeatMs: number; delayMs: number }) {}

  decide(signal: ShutdownSignal, now = performance.now()): Decision {
    if (this.startedAt === undefined) {
      this.startedAt = now;
      this.last = { signal, at: now };
      return 'stop';
    }
    // Measured from the signal that was acted on, so that a burst of echoes stays one step.
    if (this.last?.signal === signal && now - this.last.at < this.opts.repeatMs) return 'repeat';
    this.last = { signal, at: now };
    if (!this.hurried && now - this.startedAt < this.opts.delayMs) {
      this.hurried = true;
      return 'hurry';
    }
    return 'exit';
  }
}

/** The wait of SHUTDOWN_DELAY_MS, which a second signal (or the primary, retiring a worker) cuts short. */
export interface ShutdownDelay {
  /** Resolves after `ms`, at once when `ms` is 0 or skip() was called. Logs the phase. */
  wait(logger: Logger): Promise<void>;
  skip(): void;
}

export function shutdownDelay(ms: number): ShutdownDelay {
  let skipped = false;
  let end: (() => void) | undefined;
  return {
    async wait(logger) {
      if (skipped || ms <= 0) return;
      logger.info({ delayMs: ms }, 'unready: /readyz answers 503, still serving until the delay ends');
      let timer: NodeJS.Timeout | undefined;
      const cut = await new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
        end = () => resolve(true);
      });
      clearTimeout(timer);
      if (cut) logger.info('delay cut short: draining now');
    },
    skip() {
      skipped = true;
      end?.();
    },
  };
}

/**
 * Messages between the WORKERS primary and its workers (node:cluster's IPC channel; the
 * cluster module's own messages never carry this key).
 */
export const LIFECYCLE = 'userServiceLifecycle';
export type LifecycleMessage =
  /** worker → primary: it listens and its stores answer (what /readyz checks). */
  | { [LIFECYCLE]: 'ready' }
  /** primary → worker: drain now, without SHUTDOWN_DELAY_MS (a reload, or a second signal). */
  | { [LIFECYCLE]: 'drain' }
  /** worker → primary: drained and about to exit; primary → worker: the echo (see leaveSafely). */
  | { [LIFECYCLE]: 'leaving' };

const KINDS = new Set<unknown>(['ready', 'drain', 'leaving']);

export function lifecycleMessage(message: unknown): LifecycleMessage[typeof LIFECYCLE] | undefined {
  const value = (message as Record<string, unknown> | null)?.[LIFECYCLE];
  return KINDS.has(value) ? (value as LifecycleMessage[typeof LIFECYCLE]) : undefined;
}

/** How long a drained worker waits for the primary's echo before it exits all the same. */
const LEAVE_ECHO_MS = 1000;

/**
 * Exits a drained worker only once no connection can still be on its way to it. node:cluster's
 * primary accepts each connection and sends it to a worker over IPC, keeping its own copy until
 * the worker answers; a worker that has closed its server answers "not accepted" and the
 * primary hands the connection to another. But a worker that exits with such a message still
 * unread never answers, and the primary then holds that connection open, unanswered, for good
 * (seen: one request in ~2,000 hung during a rolling reload). The channel is ordered both ways:
 * the primary's echo of 'leaving' comes after it has read the worker's earlier "server closed"
 * (so it sends nothing more) and after every connection it sent before, which this worker has
 * therefore answered by the time the echo arrives.
 */
function leaveSafely(code: number): void {
  if (!cluster.isWorker || !process.connected) return process.exit(code);
  const exit = () => process.exit(code);
  setTimeout(exit, LEAVE_ECHO_MS).unref();
  process.on('message', (message) => lifecycleMessage(message) === 'leaving' && exit());
  process.once('disconnect', exit);
  process.send?.({ [LIFECYCLE]: 'leaving' } satisfies LifecycleMessage);
}

/**
 * Set by the primary on the first new worker of a reload: it applies the migrations of the
 * build it runs before it listens, as the primary did at start for the first build.
 */
export const PREPARE_ENV = 'USER_SERVICE_PREPARE_DATABASE';

/** How long a reload waits for a new worker to listen and be ready before giving up on it. */
export const READY_WAIT_MS = 30_000;

export interface Supervised {
  logger: Logger;
  /** The graceful stop; resolves whether every request in flight was answered in time. */
  stop(): Promise<boolean>;
  /** Ends SHUTDOWN_DELAY_MS early (or skips it, before stop()). */
  skipDelay(): void;
  /** Whether the stores answer now, as /readyz would say. */
  ready(): Promise<boolean>;
}

/**
 * Signal handling of a process that serves: the single process (WORKERS=1) or a worker.
 * Exits 0 once every request in flight was answered within SHUTDOWN_GRACE_MS, 1 otherwise.
 */
export function superviseServer(running: Supervised, opts: { repeatMs: number; delayMs: number }): void {
  const { logger } = running;
  const ladder = new SignalLadder(opts);
  let stopping = false;
  const stop = () => {
    stopping = true;
    running.stop().then(
      (clean) => leaveSafely(clean ? 0 : 1),
      (err: Error) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };

  const onSignal = (signal: ShutdownSignal) => {
    if (cluster.isWorker) {
      // A worker may get the terminal's SIGINT and then the primary's SIGTERM: the primary
      // enforces the grace period (and says when to skip the delay), so only the first counts.
      if (stopping) return logger.info({ signal }, 'shutdown signal again: ignored, the primary decides');
      logger.info({ signal }, 'shutdown signal: stopping gracefully');
      return stop();
    }
    const decision = ladder.decide(signal);
    switch (decision) {
      case 'stop':
        logger.info({ signal }, 'shutdown signal: stopping gracefully');
        return stop();
      case 'repeat':
        return logger.info(
          { signal, repeatMs: opts.repeatMs },
          'shutdown signal repeated: ignored (a group-delivered signal arrives twice)',
        );
      case 'hurry':
        logger.warn({ signal }, 'second shutdown signal: skipping the rest of the delay');
        return running.skipDelay();
      case 'exit':
        logger.error({ signal }, 'second shutdown signal while draining: exiting now');
        return process.exit(1);
    }
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  // Node's default for SIGHUP is to die: a closed terminal or a reload sent to the whole
  // group would take the service down. Only a WORKERS primary reloads.
  process.on('SIGHUP', () =>
    logger.warn(
      cluster.isWorker
        ? 'SIGHUP ignored by a worker: the primary reloads'
        : 'SIGHUP ignored: a single process (WORKERS=1) cannot reload; restart it to run a new build',
    ),
  );

  if (!cluster.isWorker) return;
  process.on('message', (message) => {
    if (lifecycleMessage(message) !== 'drain') return;
    running.skipDelay();
    if (!stopping) {
      logger.info('asked by the primary to drain');
      stop();
    }
  });
  void announceReady(running, () => stopping);
}

/** Tells the primary once this worker listens and its stores answer; a reload waits for it. */
async function announceReady(running: Supervised, stopping: () => boolean): Promise<void> {
  const until = performance.now() + READY_WAIT_MS;
  while (!stopping() && performance.now() < until) {
    if (await running.ready().catch(() => false)) {
      process.send?.({ [LIFECYCLE]: 'ready' } satisfies LifecycleMessage);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
