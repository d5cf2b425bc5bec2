import type { Cluster, Redis } from 'ioredis';
import { sessionKeys, type SessionKeys } from './keys';
import { parseSession, type Session } from './session';
import { isTokenShaped } from './token';

/** A single node or a Redis Cluster: the reader works on either. */
export type RedisClient = Redis | Cluster;

/**
 * KEYS[1] the session key; ARGV[1] now (Unix ms). Answers the session JSON and slides the key's
 * TTL to min(idle timeout, time left before the absolute expiry), in one atomic step; answers
 * nil for a missing key, a JSON of a version it does not know, or a session past its expiry.
 * Another language runs this very script to read a session (see the README).
 */
export const VERIFY_SESSION_LUA = `local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, s = pcall(cjson.decode, raw)
if not ok or type(s) ~= 'table' or s.v ~= 1 then return false end
if type(s.expires_at) ~= 'number' or type(s.idle_timeout) ~= 'number' then return false end
local left = s.expires_at * 1000 - tonumber(ARGV[1])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local idle = s.idle_timeout * 1000
if idle < left then left = idle end
redis.call('PEXPIRE', KEYS[1], math.floor(left))
return raw
`;

const COMMAND = 'wechatSessionVerify';

interface VerifyCommand {
  [COMMAND](key: string, nowMs: number): Promise<string | null>;
}

/** defineCommand once per client: ioredis keeps the script's SHA per command. */
const defined = new WeakSet<object>();

function withVerify(redis: RedisClient): RedisClient & VerifyCommand {
  if (!defined.has(redis)) {
    redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: VERIFY_SESSION_LUA });
    defined.add(redis);
  }
  return redis as RedisClient & VerifyCommand;
}

export interface SessionReaderOptions {
  /** The user service's REDIS_KEY_PREFIX. */
  keyPrefix: string;
  /** Runs each Redis call, e.g. through a circuit breaker; the call itself when absent. */
  guard?: <T>(call: () => Promise<T>) => Promise<T>;
}

/** Reads and keeps alive the user service's sessions. */
export class SessionReader {
  protected readonly keys: Pick<SessionKeys, 'session'>;
  private readonly verifier: RedisClient & VerifyCommand;
  private readonly guard?: SessionReaderOptions['guard'];

  constructor(redis: RedisClient, options: SessionReaderOptions) {
    this.verifier = withVerify(redis);
    this.keys = sessionKeys(options.keyPrefix);
    this.guard = options.guard;
  }

  protected guarded<T>(call: () => Promise<T>): Promise<T> {
    return this.guard ? this.guard(call) : call();
  }

  /**
   * The live session of a token, or null when it is unknown, expired, idle too long or of a
   * version this reader does not know. Slides the session's idle timeout. Rejects when Redis
   * does not answer.
   */
  async verify(token: unknown): Promise<Session | null> {
    if (!isTokenShaped(token)) return null;
    const key = this.keys.session(token);
    const raw = await this.guarded(() => this.verifier[COMMAND](key, Date.now()));
    return raw ? parseSession(raw) : null;
  }
}

/** SessionReader#verify for a one-off call: the live session of `token`, or null. */
export function readSession(
  redis: RedisClient,
  token: unknown,
  options: SessionReaderOptions,
): Promise<Session | null> {
  return new SessionReader(redis, options).verify(token);
}
