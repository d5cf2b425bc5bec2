import type { Context } from 'koa';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { RateLimitedError } from '../errors';
import type { RedisBreaker } from '../redis/breaker';
import type { RedisClient } from '../redis/client';
import type { KeyLayout } from '../redis/keys';
import type { RouteGuard } from './route';

export interface RateLimitSettings {
  windowSeconds: number;
  /** Calls per window from one client IP, over all rate-limited routes; 0 turns it off. */
  ipPoints: number;
  /** Calls per window for one openid, over all rate-limited routes; 0 turns it off. */
  openidPoints: number;
}

/**
 * Fixed-window counters in Redis (rate-limiter-flexible), so every service process sharing the
 * Redis shares the budget. When Redis does not answer, a per-process in-memory limiter with
 * the same budget takes over: the limits degrade, reads keep flowing.
 */
class Limiter {
  private readonly shared: RateLimiterAbstract;
  private readonly local: RateLimiterAbstract;

  constructor(
    redis: RedisClient,
    keyPrefix: string,
    points: number,
    duration: number,
    private readonly breaker: RedisBreaker,
  ) {
    this.local = new RateLimiterMemory({ keyPrefix, points, duration });
    this.shared = new RateLimiterRedis({
      storeClient: redis,
      keyPrefix,
      points,
      duration,
      rejectIfRedisNotReady: true,
      insuranceLimiter: this.local,
    });
  }

  /** While the breaker is open, straight to the local limiter: no request waits on Redis. */
  consume(key: string): Promise<unknown> {
    return this.breaker.isOpen ? this.local.consume(key) : this.shared.consume(key);
  }
}

export function rateLimitGuard(
  redis: RedisClient,
  keys: KeyLayout,
  breaker: RedisBreaker,
  settings: RateLimitSettings,
): RouteGuard {
  const make = (scope: string, points: number) =>
    points > 0 ? new Limiter(redis, keys.rateLimit(scope), points, settings.windowSeconds, breaker) : null;
  const byIp = make('ip', settings.ipPoints);
  const byOpenid = make('openid', settings.openidPoints);

  return (route) => {
    if (!route.rateLimited || (!byIp && !byOpenid)) return null;
    return (ctx: Context, input) => consume(ctx, input);
  };

  async function consume(ctx: Context, input: unknown): Promise<void> {
    const openid = (input as { openid?: unknown }).openid;
    const checks: Promise<unknown>[] = [];
    if (byIp) checks.push(byIp.consume(ctx.ip || 'unknown'));
    if (byOpenid && typeof openid === 'string') checks.push(byOpenid.consume(openid));
    try {
      await Promise.all(checks);
    } catch (err) {
      if (err instanceof RateLimiterRes) throw new RateLimitedError(Math.max(1, Math.ceil(err.msBeforeNext / 1000)));
      throw err;
    }
  }
}
