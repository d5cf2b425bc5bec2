import type { Context } from 'koa';
import { LRUCache } from 'lru-cache';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
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
  /**
   * RATE_LIMIT_LOCAL_KEYS: keys each budget counts in this process at most while Redis is down
   * (clients, or client+user pairs, active within a window). ~200 bytes each: 10,000 keep the
   * three budgets under ~6 MB whatever the number of clients.
   */
  localKeys: number;
}

/**
 * The per-process fallback while Redis does not answer: the same fixed windows, kept in an LRU
 * of at most `maxKeys` keys and expired when next looked at, never by a timer.
 * rate-limiter-flexible's RateLimiterMemory keeps a key and a timer per client for the whole
 * window, unbounded: a storm from new addresses (many real clients, or IPv6 /64s) grew the heap
 * by ~1 KB a request until the process ran out of memory, and throughput fell tenfold.
 *
 * What bounding costs: past `maxKeys` keys in a window the least recently seen are forgotten,
 * and a forgotten client starts a fresh window. A client hammering from one address keeps its
 * key fresh and stays limited; only someone touching `maxKeys` other keys in between (i.e. who
 * has that many addresses, each a budget of its own anyway) can make one forgotten.
 */
export class LocalWindows {
  private readonly windows: LRUCache<string, { used: number; resetAt: number }>;

  constructor(
    private readonly points: number,
    private readonly durationMs: number,
    maxKeys: number,
  ) {
    this.windows = new LRUCache({ max: maxKeys });
  }

  /** Keys held now (at most maxKeys). */
  get size(): number {
    return this.windows.size;
  }

  /** Takes `cost` points of the key's window; throws a RateLimiterRes when that is over budget. */
  consume(key: string, cost: number, now = Date.now()): void {
    let window = this.windows.get(key);
    if (!window || window.resetAt <= now) {
      window = { used: 0, resetAt: now + this.durationMs };
      this.windows.set(key, window);
    }
    window.used += cost;
    if (window.used > this.points) throw new RateLimiterRes(0, window.resetAt - now, window.used, false);
  }
}

/**
 * Fixed-window counters in Redis (rate-limiter-flexible), so every service process sharing the
 * Redis shares the budget. When Redis does not answer, a per-process LocalWindows with the same
 * budget takes over: the limits degrade, reads keep flowing, memory stays bounded.
 */
class Limiter {
  private readonly shared: RateLimiterRedis;
  readonly local: LocalWindows;

  constructor(
    redis: RedisClient,
    keyPrefix: string,
    private readonly points: number,
    duration: number,
    localKeys: number,
    private readonly breaker: RedisBreaker,
  ) {
    this.local = new LocalWindows(points, duration * 1000, localKeys);
    this.shared = new RateLimiterRedis({
      storeClient: redis,
      keyPrefix,
      points,
      duration,
      rejectIfRedisNotReady: true,
    });
  }

  /** While the breaker is open, straight to the local windows: no request waits on Redis. */
  async consume(key: string, cost = 1): Promise<void> {
    // A cost above the whole budget would refuse every call; at most it takes the window.
    const points = Math.min(cost, this.points);
    if (this.breaker.isOpen) return this.local.consume(key, points);
    try {
      await this.shared.consume(key, points);
    } catch (err) {
      if (err instanceof RateLimiterRes) throw err;
      // Redis failed or is not ready: this call is counted here instead.
      this.local.consume(key, points);
    }
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
): RouteGuard & { localKeys(): number } {
  const make = (scope: string, points: number) =>
    points > 0
      ? new Limiter(redis, keys.rateLimit(scope), points, settings.windowSeconds, settings.localKeys, breaker)
      : null;
  const byClient = make('ip', settings.ipPoints);
  const byOpenid = make('openid', settings.openidPoints);
  const byUserId = make('user', settings.openidPoints);

  const guard: RouteGuard = (route) => {
    if (route.rateLimited === false || (!byClient && !byOpenid)) return null;
    const cost = route.rateCost ?? 1;
    return (ctx: Context, input) => consume(ctx, input, cost);
  };
  const localKeys = () => [byClient, byOpenid, byUserId].reduce((n, l) => n + (l?.local.size ?? 0), 0);
  return Object.assign(guard, { localKeys });

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
