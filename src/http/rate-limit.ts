import type { Context } from 'koa';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { RateLimitedError } from '../errors';
import type { RedisBreaker } from '../redis/breaker';
import type { RedisClient } from '../redis/client';
import type { KeyLayout } from '../redis/keys';
import { limitKey } from './client-ip';
import type { RouteGuard } from './route';

export interface RateLimitSettings {
  windowSeconds: number;
  /** Calls per window from one client (IPv4 address or IPv6 /64), over all routes; 0 turns it off. */
  ipPoints: number;
  /** Calls per window from one client on one user (openid, or user_id for update); 0 turns it off. */
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
    private readonly points: number,
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
  consume(key: string, cost = 1): Promise<unknown> {
    // A cost above the whole budget would refuse every call; at most it takes the window.
    const points = Math.min(cost, this.points);
    return this.breaker.isOpen ? this.local.consume(key, points) : this.shared.consume(key, points);
  }
}

/**
 * Every route is limited unless its spec says `rateLimited: false`. Two budgets, both keyed by
 * the client (http/client-ip.ts: a validated IPv4 address or IPv6 /64, never header text):
 * - per client, over all routes (RATE_LIMIT_IP), a call taking its route's `rateCost`;
 * - per client and user (RATE_LIMIT_OPENID), on routes whose input names one: the openid, or
 *   the user_id of update. Keying it by the client too means strangers spending their budget
 *   on an openid never spend its owner's: nobody can lock a user out from another address.
 *   What it costs: an attacker with many addresses gets that many budgets on one user (each
 *   still inside its per-client budget).
 * Every key is bounded: the client key is at most an IPv6 prefix, openid and user_id are
 * bounded by their schemas.
 */
export function rateLimitGuard(
  redis: RedisClient,
  keys: KeyLayout,
  breaker: RedisBreaker,
  settings: RateLimitSettings,
): RouteGuard {
  const make = (scope: string, points: number) =>
    points > 0 ? new Limiter(redis, keys.rateLimit(scope), points, settings.windowSeconds, breaker) : null;
  const byClient = make('ip', settings.ipPoints);
  const byOpenid = make('openid', settings.openidPoints);
  const byUserId = make('user', settings.openidPoints);

  return (route) => {
    if (route.rateLimited === false || (!byClient && !byOpenid)) return null;
    const cost = route.rateCost ?? 1;
    return (ctx: Context, input) => consume(ctx, input, cost);
  };

  async function consume(ctx: Context, input: unknown, cost: number): Promise<void> {
    const { openid, user_id: userId } = input as { openid?: unknown; user_id?: unknown };
    const client = limitKey(ctx.ip);
    // Client keys never hold '|', so the first one splits the key unambiguously.
    let subject: [Limiter, string] | null = null;
    if (byOpenid && typeof openid === 'string') subject = [byOpenid, `${client}|${openid}`];
    else if (byUserId && typeof userId === 'number') subject = [byUserId, `${client}|${userId}`];
    try {
      // One after the other: a client over its budget creates no per-user keys, so the keys
      // one client can make per window are bounded by its budget.
      if (byClient) await byClient.consume(client, cost);
      if (subject) await subject[0].consume(subject[1]);
    } catch (err) {
      if (err instanceof RateLimiterRes) throw new RateLimitedError(Math.max(1, Math.ceil(err.msBeforeNext / 1000)));
      throw err;
    }
  }
}
