import { ServiceError } from '../errors';

/**
 * At most `max` jobs at a time, at most `queueMax` more waiting in order; a job beyond that is
 * refused at once (ServiceError 'unavailable') rather than held, with its memory, in a queue
 * without end. Image decoding is CPU-bound and libvips already uses a thread per core.
 */
export class Slots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly max: number,
    private readonly queueMax: number,
    private readonly what = 'jobs',
  ) {}

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.running >= this.max) {
      if (this.waiting.length >= this.queueMax) {
        throw new ServiceError('unavailable', `too many ${this.what} at once, try again`);
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next job: `running` stays as it is.
      if (next) next();
      else this.running--;
    }
  }
}
