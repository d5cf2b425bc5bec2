import type { RedisBreaker } from '../redis/breaker';
import type { RedisClient } from '../redis/client';
import type { KeyLayout } from '../redis/keys';
import { isTokenShaped, newToken } from './token';

/** The session JSON stored at `<prefix>session:{<token>}`: a contract with sibling services. */
export interface Session {
  /** Layout version of this JSON; readers ignore versions they do not know. */
  v: 1;
  /** null while the openid has no registered user (a session issued by getOpenid). */
  user_id: number | null;
  openid: string;
  /** Unix seconds. */
  issued_at: number;
  /** Unix seconds: the absolute end, whatever the activity. */
  expires_at: number;
  /** Seconds without use after which the session ends before expires_at. */
  idle_timeout: number;
}

export const SESSION_VERSION = 1;

export type { RedisClient };

// KEYS[1] session; ARGV[1] now (ms). Answers the session JSON and slides its TTL to
// min(idle timeout, time left before the absolute expiry), in one atomic round trip.
const VERIFY = `
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, s = pcall(cjson.decode, raw)
if not ok or type(s) ~= 'table' or s.v ~= 1 then return false end
local left = s.expires_at * 1000 - tonumber(ARGV[1])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local idle = s.idle_timeout * 1000
if idle < left then left = idle end
redis.call('PEXPIRE', KEYS[1], math.floor(left))
return raw`;

// KEYS[1] the user's session index; ARGV: token, its absolute expiry (ms), now (ms), index TTL
// (ms). Adds the token and drops the tokens whose absolute expiry has passed, so the index
// stays as small as the live sessions: one command instead of three.
export const SESSION_INDEX_LUA = `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`;

interface VerifyCommand {
  sessionVerify(key: string, nowMs: number): Promise<string | null>;
}

interface IndexCommand {
  sessionIndex(key: string, token: string, expiresAtMs: number, nowMs: number, ttlMs: number): Promise<number>;
}

/** Reads and keeps alive sessions: all a sibling service needs (see sessions/middleware.ts). */
export class SessionReader {
  protected readonly redis: RedisClient & VerifyCommand;

  constructor(
    redis: RedisClient,
    protected readonly keys: Pick<KeyLayout, 'session'>,
    private readonly breaker?: RedisBreaker,
  ) {
    redis.defineCommand('sessionVerify', { numberOfKeys: 1, lua: VERIFY });
    this.redis = redis as RedisClient & VerifyCommand;
  }

  protected guarded<T>(call: () => Promise<T>): Promise<T> {
    return this.breaker ? this.breaker.run(call) : call();
  }

  /** The live session of a token, or null when it is unknown, expired or idle too long. */
  async verify(token: unknown): Promise<Session | null> {
    if (!isTokenShaped(token)) return null;
    const key = this.keys.session(token);
    const raw = await this.guarded(() => this.redis.sessionVerify(key, Date.now()));
    return raw ? (JSON.parse(raw) as Session) : null;
  }
}

export interface SessionSettings {
  ttlSeconds: number;
  idleSeconds: number;
}

export interface IssuedSession {
  token: string;
  expires_at: number;
}

/** Issues and ends sessions; owned by the user service. */
export class SessionStore extends SessionReader {
  private readonly indexer: RedisClient & IndexCommand;

  constructor(
    redis: RedisClient,
    protected override readonly keys: KeyLayout,
    private readonly settings: SessionSettings,
    breaker?: RedisBreaker,
  ) {
    super(redis, keys, breaker);
    redis.defineCommand('sessionIndex', { numberOfKeys: 1, lua: SESSION_INDEX_LUA });
    this.indexer = redis as RedisClient & IndexCommand;
  }

  async issue(user: { user_id: number | null; openid: string }): Promise<IssuedSession> {
    const token = newToken();
    const nowMs = Date.now();
    const issuedAt = Math.floor(nowMs / 1000);
    const session: Session = {
      v: SESSION_VERSION,
      user_id: user.user_id,
      openid: user.openid,
      issued_at: issuedAt,
      expires_at: issuedAt + this.settings.ttlSeconds,
      idle_timeout: this.settings.idleSeconds,
    };
    const absoluteMs = session.expires_at * 1000;
    const keyTtlMs = Math.min(this.settings.idleSeconds, this.settings.ttlSeconds) * 1000;
    const index = this.keys.userSessions(user.openid);
    // Issued together so ioredis sends them in one round trip (two slots in a cluster).
    await this.guarded(() =>
      Promise.all([
        this.redis.set(this.keys.session(token), JSON.stringify(session), 'PX', keyTtlMs),
        this.indexer.sessionIndex(index, token, absoluteMs, nowMs, this.settings.ttlSeconds * 1000),
      ]),
    );
    return { token, expires_at: session.expires_at };
  }

  /** Ends every session of the openid; answers how many were live. */
  async revokeAll(openid: string): Promise<number> {
    const index = this.keys.userSessions(openid);
    return this.guarded(async () => {
      const tokens = await this.redis.zrange(index, 0, -1);
      // One DEL per session key: in Redis Cluster they live in different slots.
      const deleted = await Promise.all(tokens.map((t) => this.redis.del(this.keys.session(t))));
      // Only the tokens read: one issued meanwhile stays indexed, so a later logout ends it.
      if (tokens.length) await this.redis.zrem(index, ...tokens);
      return deleted.reduce((a, b) => a + b, 0);
    });
  }
}
