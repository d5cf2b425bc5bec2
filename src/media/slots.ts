import { ServiceError } from '../errors';

export interface SlotOptions {
  /**
   * Whose job it is (a user): a key has at most one job queued or running, and its next one
   * waits behind it, outside the queue, so one caller cannot fill the queue ahead of others.
   */
  key?: string;
  /** The caller has gone: its job is dropped from the queue, or skipped when its turn comes. */
  signal?: AbortSignal;
}

/** What a job whose caller has gone rejects with (never answered: there is no one to answer). */
export const callerGone = () => Object.assign(new Error('the caller has gone'), { status: 499 });

/**
 * At most `max` jobs at a time, at most `queueMax` more waiting in order; a job beyond that is
 * refused at once (ServiceError 'unavailable') rather than held, with its memory, in a queue
 * without end. Image decoding is CPU-bound and libvips already uses a thread per core.
 */
export class Slots {
  private running = 0;
  private readonly waiting: { start: () => void; signal?: AbortSignal }[] = [];
  /** Per key, the settling of its last job: the next job of that key starts after it. */
  private readonly tails = new Map<string, Promise<unknown>>();

  constructor(
    private readonly max: number,
    private readonly queueMax: number,
    private readonly what = 'jobs',
  ) {}

  async run<T>(job: () => Promise<T>, { key, signal }: SlotOptions = {}): Promise<T> {
    if (key === undefined) return this.admit(job, signal);
    const before = this.tails.get(key);
    const settled = (async () => {
      if (before) await before;
      return this.admit(job, signal);
    })();
    const tail = settled.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await settled;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  private async admit<T>(job: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw callerGone();
    if (this.running >= this.max) {
      if (this.waiting.length >= this.queueMax) {
        throw new ServiceError('unavailable', `too many ${this.what} at once, try again`);
      }
      await new Promise<void>((resolve, reject) => {
        const entry = { start: resolve, signal };
        const leave = () => {
          const at = this.waiting.indexOf(entry);
          if (at >= 0) this.waiting.splice(at, 1);
          reject(callerGone());
        };
        entry.start = () => {
          signal?.removeEventListener('abort', leave);
          resolve();
        };
        signal?.addEventListener('abort', leave, { once: true });
        this.waiting.push(entry);
      });
    } else {
      this.running++;
    }
    try {
      // Its turn came after its caller left: the slot goes to the next one.
      if (signal?.aborted) throw callerGone();
      return await job();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next job: `running` stays as it is.
      if (next) next.start();
      else this.running--;
    }
  }
}
