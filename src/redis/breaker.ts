import { ReplyError } from 'ioredis';

export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError';
  constructor() {
    super('redis is unavailable (circuit open)');
  }
}

/**
 * A circuit breaker in front of Redis. A paused or overloaded Redis keeps its connection
 * "ready" while every command waits for the command timeout; without this, each request
 * would pay that timeout once per Redis call. After one timeout or connection error, calls
 * fail at once for `cooldownMs`, then one call is let through to probe.
 * Redis reply errors (a wrong type, a script error) say Redis is up and do not open it.
 */
export class RedisBreaker {
  private openUntil = 0;

  constructor(
    private readonly cooldownMs: number,
    private readonly onOpen: (err: unknown) => void = () => {},
  ) {}

  get isOpen(): boolean {
    return this.openUntil > Date.now();
  }

  async run<T>(call: () => Promise<T>): Promise<T> {
    const now = Date.now();
    if (this.openUntil > now) throw new RedisUnavailableError();
    // Half-open: this call probes, the others keep failing fast until it answers.
    if (this.openUntil !== 0) this.openUntil = now + this.cooldownMs;
    try {
      const value = await call();
      this.openUntil = 0;
      return value;
    } catch (err) {
      if (!(err instanceof ReplyError)) {
        if (this.openUntil === 0) this.onOpen(err);
        this.openUntil = Date.now() + this.cooldownMs;
      }
      throw err;
    }
  }
}
