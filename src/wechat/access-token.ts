import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ServiceError } from '../errors';
import type { Logger } from '../logger';
import type { RedisBreaker } from '../redis/breaker';
import type { RedisClient } from '../redis/client';
import type { KeyLayout } from '../redis/keys';
import { checkErrcode, postJson, upstream, WechatApiError } from './http';

export interface AccessTokenSettings {
  appid: string;
  secret: string;
  apiBase: string;
  timeoutMs: number;
}

export interface AccessTokenTiming {
  /** A token with less than this left is replaced in the background while still used. */
  refreshAheadMs: number;
  /** How long the refresher's lock lives if it dies holding it. */
  lockMs: number;
  /** Longest a caller waits for another process's refresh before failing. */
  waitMs: number;
  /** How often a waiting caller looks for the refreshed token. */
  pollMs: number;
  /**
   * WECHAT_TOKEN_REFUSAL_BACKOFF_MS: how long a refusal of stable_token (an errcode) is
   * remembered, by every process, before WeChat is asked again; 0 remembers none.
   */
  refusalBackoffMs: number;
}

/** errcodes by which a WeChat API says the access token is no longer valid. */
export const TOKEN_REJECTED = new Set([40001, 42001, 40014]);

const STABLE_TOKEN_ERRCODES: Record<number, string> = {
  [-1]: 'WeChat is busy',
  40002: 'invalid grant_type',
  40013: 'invalid appid',
  40125: 'invalid app secret',
  40164: 'this server IP is not in the whitelist',
  41002: 'appid missing',
  41004: 'app secret missing',
  45009: 'daily access token quota used up',
  45011: 'rate limited by WeChat, retry later',
  89503: 'this server IP needs administrator confirmation',
};

const refused = (errcode: number) =>
  new WechatApiError(errcode, `${STABLE_TOKEN_ERRCODES[errcode] ?? 'request refused'}, remembered for a short while`);

// A token's shape, loosely: printable ASCII, no spaces. Anything else is not stored.
const TOKEN_SHAPE = /^[\x21-\x7e]{16,2048}$/;

// KEYS[1] token: the token and its milliseconds left, in one round trip.
const READ = `
local t = redis.call('GET', KEYS[1])
if not t then return false end
return {t, redis.call('PTTL', KEYS[1])}`;

// KEYS[1]; ARGV[1] the expected value: deleted only if it still holds it. Releases the lock
// (only the holder's), and drops a rejected token (only if nobody replaced it already).
const DELETE_IF = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

interface Commands {
  wxTokenRead(key: string): Promise<[string, number] | null>;
  wxDeleteIf(key: string, expected: string): Promise<number>;
}

/**
 * The app's one WeChat access token, for every process and instance. It comes from
 * /cgi-bin/stable_token and lives in Redis (keys.wechatAccessToken, TTL = expires_in). When it
 * is missing, one process refreshes it under a Redis lock (SET NX PX, released only by its
 * holder) and every other caller, in this process or another, waits for that result instead of
 * fetching its own: processes that each refreshed would keep invalidating each other's token.
 * The token never goes into a log line or an error message.
 */
export class AccessTokenProvider {
  private readonly redis: RedisClient & Commands;
  private readonly key: string;
  private readonly lockKey: string;
  private readonly refusedKey: string;
  private readonly timing: AccessTokenTiming;
  /** This process's refresh in flight: callers in one process share it. */
  private inflight?: Promise<string>;
  /** A background refresh ahead of expiry is tried at most once per this time, per process. */
  private nextAheadAt = 0;
  /** The last refusal this process saw or stored, remembered here too should Redis miss it. */
  private refusal?: { errcode: number; until: number };

  constructor(
    private readonly settings: AccessTokenSettings,
    redis: RedisClient,
    keys: Pick<KeyLayout, 'wechatAccessToken' | 'wechatAccessTokenLock' | 'wechatAccessTokenRefused'>,
    private readonly breaker: RedisBreaker,
    private readonly logger: Logger,
    timing: Partial<AccessTokenTiming> = {},
  ) {
    redis.defineCommand('wxTokenRead', { numberOfKeys: 1, lua: READ });
    redis.defineCommand('wxDeleteIf', { numberOfKeys: 1, lua: DELETE_IF });
    this.redis = redis as RedisClient & Commands;
    this.key = keys.wechatAccessToken(settings.appid);
    this.lockKey = keys.wechatAccessTokenLock(settings.appid);
    this.refusedKey = keys.wechatAccessTokenRefused(settings.appid);
    const lockMs = timing.lockMs ?? settings.timeoutMs * 2 + 1000;
    this.timing = {
      refreshAheadMs: 300_000,
      pollMs: 50,
      refusalBackoffMs: 10_000,
      lockMs,
      waitMs: lockMs + settings.timeoutMs,
      ...timing,
    };
  }

  /**
   * Runs a WeChat API call with the token. If WeChat says the token is no longer valid
   * (TOKEN_REJECTED), the cached token is dropped unless another caller replaced it already,
   * a fresh one is obtained and the call is made once more; any other failure is the caller's.
   */
  async call<T>(api: (accessToken: string) => Promise<T>): Promise<T> {
    const token = await this.get();
    try {
      return await api(token);
    } catch (err) {
      if (!(err instanceof WechatApiError) || !TOKEN_REJECTED.has(err.errcode)) throw err;
      this.logger.warn({ errcode: err.errcode }, 'wechat access token rejected: refreshing it');
      await this.store(() => this.redis.wxDeleteIf(this.key, token));
      let fresh = await this.get();
      // A refresh that began before the drop may still hand out the rejected token.
      if (fresh === token) fresh = await this.refresh(token);
      return api(fresh);
    }
  }

  /** The current token: from Redis, or refreshed (once for all callers) when there is none. */
  async get(): Promise<string> {
    const cached = await this.read();
    if (cached) {
      if (cached.leftMs < this.timing.refreshAheadMs) this.refreshAhead();
      return cached.token;
    }
    this.inflight ??= this.refresh().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  /** Replaces a token close to its expiry while callers go on using it; never waits. */
  private refreshAhead(): void {
    const now = Date.now();
    if (this.inflight || now < this.nextAheadAt) return;
    this.nextAheadAt = now + 30_000;
    this.refresh(undefined, { wait: false }).catch((err: unknown) => {
      this.logger.warn({ err: (err as Error)?.message }, 'wechat access token: refresh ahead of expiry failed');
    });
  }

  /**
   * Takes the lock and fetches, or waits (bounded) for whoever holds it to store a token.
   * `rejected` is a token known to be invalid: it does not count as a result.
   */
  private async refresh(rejected?: string, { wait = true } = {}): Promise<string> {
    const deadline = Date.now() + this.timing.waitMs;
    for (;;) {
      await this.unlessRefused();
      const lock = randomBytes(16).toString('hex');
      const held = await this.store(() => this.redis.set(this.lockKey, lock, 'PX', this.timing.lockMs, 'NX'));
      if (held) {
        try {
          // Whoever held the lock before may have just stored a fresh token.
          const current = await this.read();
          if (current && current.token !== rejected && current.leftMs >= this.timing.refreshAheadMs) {
            return current.token;
          }
          const fresh = await this.fetch().catch((err: unknown) => this.remember(err));
          await this.store(() => this.redis.set(this.key, fresh.token, 'PX', fresh.expiresInMs));
          this.logger.info({ expiresInSeconds: fresh.expiresInMs / 1000 }, 'wechat access token refreshed');
          return fresh.token;
        } finally {
          await this.store(() => this.redis.wxDeleteIf(this.lockKey, lock)).catch(() => undefined);
        }
      }
      if (!wait) return '';
      // Another process refreshes: its token shows up in Redis, or its lock goes away (it
      // failed or died), and then this caller tries the lock itself.
      for (;;) {
        if (Date.now() >= deadline) throw upstream('access token: no refresh finished in time');
        await sleep(this.timing.pollMs);
        const current = await this.read();
        if (current && current.token !== rejected) return current.token;
        // The holder's refusal is stored before its lock goes: every waiter has it at once.
        await this.unlessRefused();
        if (!(await this.store(() => this.redis.exists(this.lockKey)))) break;
      }
    }
  }

  /**
   * A WeChat that refuses the token (IP not whitelisted, secret changed, quota used up, busy)
   * answers the same for a while: the refusal is stored for refusalBackoffMs, before the lock is
   * released, and every caller of every process answers it at once meanwhile instead of asking
   * again. Kept in this process too: if Redis misses the write, this process still does not ask.
   * With Redis down there is no token to read either, and callers answer "unavailable" before
   * WeChat would be asked.
   */
  private async remember(err: unknown): Promise<never> {
    const backoff = this.timing.refusalBackoffMs;
    if (err instanceof WechatApiError && backoff > 0) {
      this.refusal = { errcode: err.errcode, until: Date.now() + backoff };
      this.logger.warn(
        { errcode: err.errcode, backoffMs: backoff },
        'wechat refused the access token: not asking again meanwhile',
      );
      await this.store(() => this.redis.set(this.refusedKey, String(err.errcode), 'PX', backoff)).catch(
        () => undefined,
      );
    }
    throw err;
  }

  /** Throws the refusal remembered by this or another process, if its backoff still runs. */
  private async unlessRefused(): Promise<void> {
    const local = this.refusal;
    if (local && Date.now() < local.until) throw refused(local.errcode);
    if (this.timing.refusalBackoffMs <= 0) return;
    const shared = await this.store(() => this.redis.get(this.refusedKey));
    if (shared !== null) throw refused(Number(shared));
  }

  private async fetch(): Promise<{ token: string; expiresInMs: number }> {
    const { appid, secret, apiBase, timeoutMs } = this.settings;
    if (!appid || !secret) throw upstream('WECHAT_APPID and WECHAT_SECRET are not configured');
    const answer = await postJson(
      new URL(`${apiBase}/cgi-bin/stable_token`),
      { grant_type: 'client_credential', appid, secret, force_refresh: false },
      timeoutMs,
    );
    checkErrcode(answer, STABLE_TOKEN_ERRCODES);
    const { access_token: token, expires_in: expiresIn } = answer;
    if (typeof token !== 'string' || !TOKEN_SHAPE.test(token))
      throw upstream('stable_token answer has no access_token');
    if (typeof expiresIn !== 'number' || !Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > 86_400) {
      throw upstream('stable_token answer has no valid expires_in');
    }
    return { token, expiresInMs: expiresIn * 1000 };
  }

  private async read(): Promise<{ token: string; leftMs: number } | null> {
    const found = await this.store(() => this.redis.wxTokenRead(this.key));
    if (!found) return null;
    const [token, leftMs] = found;
    // PTTL -1 (no expiry) is a token someone stored by hand: used, and refreshed ahead.
    return { token, leftMs: leftMs < 0 ? 0 : leftMs };
  }

  private async store<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await this.breaker.run(command);
    } catch (err) {
      throw new ServiceError('unavailable', 'the cache is unavailable, try again', { cause: err });
    }
  }
}
