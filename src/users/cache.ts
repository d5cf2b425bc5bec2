import type { RedisBreaker } from '../redis/breaker';
import type { KeyLayout } from '../redis/keys';
import type { RedisClient } from '../redis/client';
import { UNIONID_FIELD, unionidLiteral } from 'wechat-user-sessions';
import { WRITE_SESSION_LUA, type SessionDraft } from '../sessions/store';

/**
 * The Redis profile cache. Each profile key is a hash {v, user}: `user` is the JSON served to
 * clients (its phone sealed), `v` the row version it was read at. The user_id and unionid a
 * session needs are read from the JSON's first fields (USER_HEAD), not kept twice: two fields
 * fewer are ~80 B a user (a process of the layout before kept `id` and `u`; a fill removes them).
 * A key holding only `v` is a tombstone: "no profile cached, and none older than v may be stored".
 *
 * That closes the classic cache-aside race. A reader that missed, read row v1 from MySQL and
 * was then delayed can no longer overwrite the cache after an update to v2 was acknowledged:
 * the update left a tombstone at v2 before it committed, and FILL refuses anything older.
 *
 * A key holding only {absent: 1} says "MySQL had no such user a moment ago". It lives a few
 * seconds (CACHE_ABSENT_TTL_MS), so a burst of launches of an unregistered openid costs one
 * query instead of one per caller whose miss came back after the first query ended. It is
 * written only where no key exists, so it can never hide a profile a registration has cached,
 * and every fill removes it, so a registration is visible as soon as it is answered. Beside a
 * `v` it means nothing (a process that predates it may have filled over it; logout would then
 * leave {absent, v} for the profile's lifetime), and fills and logout remove it anyway.
 */

/**
 * How a cached user's JSON begins (model.ts toUser's key order): its user_id, then the openid
 * (A-Z a-z 0-9 _ -), then the unionid as a JSON literal, null or a string without commas (WeChat's
 * and a gateway's are held to the openid's shape). As a regular expression and as a Lua pattern;
 * a JSON that does not match is a miss, read again from MySQL.
 */
const USER_HEAD = /^\{"user_id":(\d+),"openid":"[^"]*","unionid":([^,]*),/;
const USER_HEAD_LUA = '^{"user_id":(%d+),"openid":"[^"]*","unionid":([^,]*),';

/** What the cache says of an openid that has no user: the `absent` entry above. */
export const NO_USER = Symbol('no such user');

// Stores a profile unless the key already holds a newer version (or this very version with a
// profile). Shared by FILL and FILL_WITH_SESSION.
const FILL_FUNCTION = `
local function fill(key, version, json, ttl)
  redis.call('HDEL', key, 'absent', 'id', 'u')
  local cur = tonumber(redis.call('HGET', key, 'v'))
  local v = tonumber(version)
  if cur and (cur > v or (cur == v and redis.call('HEXISTS', key, 'user') == 1)) then return 0 end
  redis.call('HDEL', key, 'gone')
  redis.call('HSET', key, 'v', version, 'user', json)
  redis.call('PEXPIRE', key, ttl)
  return 1
end
`;

// KEYS[1] profile; ARGV: version, user JSON, ttl ms.
const FILL = `${FILL_FUNCTION}
return fill(KEYS[1], ARGV[1], ARGV[2], ARGV[3])`;

// A miss, once its row is read: the fill and the caller's session in one round trip. KEYS as
// LOGIN_LUA's; ARGV: version, user_id, user JSON, ttl ms, unionid literal, the session JSON's
// head and tail, then WRITE_SESSION_LUA's. The session is stored even when a newer version
// refuses the fill, unless the row read is of a user deleted since (`gone`): then nothing is
// written and 0 answered, so a login that read the row just before a deletion cannot leave a
// live session of the deleted user behind.
export const FILL_WITH_SESSION = `${FILL_FUNCTION}${WRITE_SESSION_LUA}
if redis.call('HGET', KEYS[1], 'gone') == ARGV[2] then return 0 end
fill(KEYS[1], ARGV[1], ARGV[3], ARGV[4])
write_session(ARGV[6] .. ARGV[2] .. '${UNIONID_FIELD}' .. ARGV[5] .. ARGV[7], KEYS[2], KEYS[3], 8)
return 1`;

// KEYS[1] profile; ARGV: version, ttl ms, and for a deletion the deleted user_id. Replaces the
// key with a tombstone at max(version, current version). A deletion's tombstone also holds
// `gone` (the user_id), which later tombstones keep while they live.
const INVALIDATE = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'v'))
local gone = ARGV[3] or redis.call('HGET', KEYS[1], 'gone')
local v = tonumber(ARGV[1])
if cur and cur > v then v = cur end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', v)
if gone then redis.call('HSET', KEYS[1], 'gone', gone) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v`;

// KEYS[1] profile; ARGV: ttl ms. "No such user", unless the key holds anything at all: a
// profile or a tombstone means a row exists (or existed since this reader's query).
const MARK_ABSENT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'absent', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`;

// KEYS[1] profile; ARGV: version. Undoes INVALIDATE when the write it guarded did not happen.
const REVERT = `
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] and redis.call('HEXISTS', KEYS[1], 'user') == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0`;

// The hot path of every launch in one round trip. KEYS[1] profile, KEYS[2] session, KEYS[3]
// the user's session index (one slot: see sessions/token.ts); ARGV: the session JSON's head
// and tail, then WRITE_SESSION_LUA's. On a hit the session is stored with the cached user_id
// and the user's JSON answered; on a miss (or a tombstone) nothing is written and nil answered;
// for an openid known to have no user, 0.
const LOGIN_FIND = `
local found = redis.call('HMGET', KEYS[1], 'user', 'absent', 'v')
if not found[1] then
  if found[2] and not found[3] then return 0 end
  return false
end
local id, u = string.match(found[1], '${USER_HEAD_LUA}')
if not id then return false end
`;
const LOGIN_WRITE = `
write_session(ARGV[1] .. id .. '${UNIONID_FIELD}' .. u .. ARGV[2], KEYS[2], KEYS[3], 3)
return found[1]`;
export const LOGIN_LUA = `${WRITE_SESSION_LUA}${LOGIN_FIND}${LOGIN_WRITE}`;

// LOGIN_LUA for a launch that presents a token: KEYS[4] its session key (in the user's slot),
// ARGV[11] the openid. When that session is live and of this openid, cached user_id and
// unionid, its idle timeout slides as the session reader's does and {user JSON, its
// expires_at} is answered; no new session is stored. Otherwise LOGIN_LUA's answers.
const LOGIN_KEEPING_LUA = `${WRITE_SESSION_LUA}${LOGIN_FIND}
local raw = redis.call('GET', KEYS[4])
if raw then
  local ok, s = pcall(cjson.decode, raw)
  if ok and type(s) == 'table' and s.v == 1 and s.openid == ARGV[11] and s.user_id == tonumber(id)
      and type(s.expires_at) == 'number' and type(s.idle_timeout) == 'number' then
    local su = s.unionid
    if type(su) == 'string' and su ~= '' then su = cjson.encode(su) else su = 'null' end
    local left = s.expires_at * 1000 - tonumber(ARGV[6])
    if su == u and left > 0 then
      local idle = s.idle_timeout * 1000
      if idle < left then left = idle end
      redis.call('PEXPIRE', KEYS[4], math.floor(left))
      return {found[1], s.expires_at}
    end
  end
end${LOGIN_WRITE}`;

/** LOGIN_LUA as an ioredis command (defineCommand with numberOfKeys 3): the user's JSON, 0 or null. */
export type LoginCommand = (
  profile: string,
  session: string,
  index: string,
  head: string,
  tail: string,
  ...args: SessionDraft['args']
) => Promise<string | 0 | null>;

interface CacheCommands {
  userCacheLogin: LoginCommand;
  userCacheLoginKeeping(
    profile: string,
    session: string,
    index: string,
    presented: string,
    head: string,
    tail: string,
    ...args: [...SessionDraft['args'], openid: string]
  ): Promise<string | 0 | null | [json: string, expiresAt: number]>;
  userCacheFill(key: string, version: number, json: string, ttlMs: number): Promise<number>;
  userCacheFillWithSession(
    profile: string,
    session: string,
    index: string,
    version: number,
    userId: number,
    json: string,
    ttlMs: number,
    unionid: string,
    head: string,
    tail: string,
    ...args: SessionDraft['args']
  ): Promise<number>;
  userCacheMarkAbsent(key: string, ttlMs: number): Promise<number>;
  userCacheInvalidate(key: string, version: number, ttlMs: number, goneUserId?: number): Promise<number>;
  userCacheRevert(key: string, version: number): Promise<number>;
}

export interface CacheEvents {
  hit?(): void;
  miss?(): void;
  error?(op: string, err: unknown): void;
}

/**
 * A cached user: its JSON as served, its user_id and unionid (so the hot path never parses the
 * JSON).
 */
export interface CachedUser {
  userId: number;
  unionid: string | null;
  json: string;
}

export interface CacheTtls {
  /** A cached profile. */
  profileSeconds: number;
  /**
   * A tombstone: long enough to outlive any reader still holding an older row, short enough
   * that an update which failed after invalidating does not keep the user uncached for long.
   */
  tombstoneMs: number;
  /**
   * "No such user": how long a user inserted into MySQL by anything but this service's
   * registration (which clears the entry) can stay unseen.
   */
  absentMs: number;
}

export class UserCache {
  private readonly redis: RedisClient & CacheCommands;
  private readonly ttlMs: number;
  private readonly tombstoneMs: number;
  private readonly absentMs: number;

  constructor(
    redis: RedisClient,
    private readonly keys: KeyLayout,
    ttls: CacheTtls,
    private readonly breaker: RedisBreaker,
    private readonly events: CacheEvents = {},
  ) {
    // defineCommand is idempotent per name; ioredis sends EVALSHA and falls back to EVAL.
    redis.defineCommand('userCacheLogin', { numberOfKeys: 3, lua: LOGIN_LUA });
    redis.defineCommand('userCacheLoginKeeping', { numberOfKeys: 4, lua: LOGIN_KEEPING_LUA });
    redis.defineCommand('userCacheFill', { numberOfKeys: 1, lua: FILL });
    redis.defineCommand('userCacheFillWithSession', { numberOfKeys: 3, lua: FILL_WITH_SESSION });
    redis.defineCommand('userCacheMarkAbsent', { numberOfKeys: 1, lua: MARK_ABSENT });
    redis.defineCommand('userCacheInvalidate', { numberOfKeys: 1, lua: INVALIDATE });
    redis.defineCommand('userCacheRevert', { numberOfKeys: 1, lua: REVERT });
    this.redis = redis as RedisClient & CacheCommands;
    this.ttlMs = ttls.profileSeconds * 1000;
    this.tombstoneMs = ttls.tombstoneMs;
    this.absentMs = ttls.absentMs;
  }

  /**
   * The cached user, NO_USER, or null on a miss. A Redis failure is a miss: reads never fail
   * on it.
   */
  async get(openid: string): Promise<CachedUser | typeof NO_USER | null> {
    try {
      const [json, absent, version] = await this.breaker.run(() =>
        this.redis.hmget(this.keys.profile(openid), 'user', 'absent', 'v'),
      );
      const head = json === null ? null : USER_HEAD.exec(json);
      if (json === null || head === null) {
        if (absent !== null && version === null) {
          this.events.hit?.();
          return NO_USER;
        }
        this.events.miss?.();
        return null;
      }
      this.events.hit?.();
      return { userId: Number(head[1]), unionid: JSON.parse(head[2]!) as string | null, json };
    } catch (err) {
      this.events.error?.('get', err);
      return null;
    }
  }

  /**
   * The cached user's JSON, with `session` stored for it in the same round trip; NO_USER, or
   * null on a miss, and then nothing was stored. A Redis failure is a miss too (reported as a
   * failed `get`). With `presented`, the session key of the token the launch presents (in the
   * user's slot: SessionStore.presentedKey): when that is a live session of this user it is slid
   * and kept instead, `session` is not stored, and its absolute expiry comes with the JSON.
   */
  async getWithSession(
    openid: string,
    session: SessionDraft,
    presented?: string,
  ): Promise<string | { json: string; keptUntil: number } | typeof NO_USER | null> {
    try {
      const { key, index, head, tail, args } = session;
      const profile = this.keys.profile(openid);
      const found = await this.breaker.run(() =>
        presented === undefined
          ? this.redis.userCacheLogin(profile, key, index, head, tail, ...args)
          : this.redis.userCacheLoginKeeping(profile, key, index, presented, head, tail, ...args, openid),
      );
      if (found === null) this.events.miss?.();
      else this.events.hit?.();
      if (found === 0) return NO_USER;
      return Array.isArray(found) ? { json: found[0], keptUntil: Number(found[1]) } : found;
    } catch (err) {
      this.events.error?.('get', err);
      return null;
    }
  }

  /** Best effort: a failed fill only costs the next reader a MySQL query. */
  async fill(openid: string, version: number, user: CachedUser): Promise<void> {
    try {
      const key = this.keys.profile(openid);
      await this.breaker.run(() => this.redis.userCacheFill(key, version, user.json, this.ttlMs));
    } catch (err) {
      this.events.error?.('fill', err);
    }
  }

  /**
   * fill() and the session of the caller that read the row, in one round trip. Throws when
   * Redis fails (then neither happened; the failure is also reported as a failed `fill`).
   * Answers false, having written nothing, when the user was deleted since (see `bury`).
   */
  async fillWithSession(openid: string, version: number, user: CachedUser, session: SessionDraft): Promise<boolean> {
    const { key, index, head, tail, args } = session;
    const profile = this.keys.profile(openid);
    try {
      const stored = await this.breaker.run(() =>
        this.redis.userCacheFillWithSession(
          profile,
          key,
          index,
          version,
          user.userId,
          user.json,
          this.ttlMs,
          unionidLiteral(user.unionid),
          head,
          tail,
          ...args,
        ),
      );
      return stored !== 0;
    } catch (err) {
      this.events.error?.('fill', err);
      throw err;
    }
  }

  /** Best effort: records that MySQL has no user for the openid (see NO_USER). */
  async markAbsent(openid: string): Promise<void> {
    try {
      const key = this.keys.profile(openid);
      await this.breaker.run(() => this.redis.userCacheMarkAbsent(key, this.absentMs));
    } catch (err) {
      this.events.error?.('mark_absent', err);
    }
  }

  /** Must succeed before a write is allowed to commit; throws when Redis does not answer. */
  async invalidate(openid: string, version: number): Promise<void> {
    const key = this.keys.profile(openid);
    await this.breaker.run(() => this.redis.userCacheInvalidate(key, version, this.tombstoneMs));
  }

  /**
   * invalidate() for a deletion: the tombstone also says which user_id is gone, so that a login
   * that read the row before the deletion committed stores no session for it (FILL_WITH_SESSION).
   * Like the tombstone, it lives tombstoneMs; it names no personal data but the key's openid.
   */
  async bury(openid: string, version: number, userId: number): Promise<void> {
    const key = this.keys.profile(openid);
    await this.breaker.run(() => this.redis.userCacheInvalidate(key, version, this.tombstoneMs, userId));
  }

  /**
   * Best effort, and deliberately past the breaker: sent on the same connection as the
   * invalidate it undoes, so even when that one timed out and is still queued in a paused
   * Redis, this runs after it.
   */
  async revert(openid: string, version: number): Promise<void> {
    try {
      await this.redis.userCacheRevert(this.keys.profile(openid), version);
    } catch (err) {
      this.events.error?.('revert', err);
    }
  }

  /**
   * Removes the cached profile but keeps its version: a DEL would also drop a tombstone that
   * still guards a just-acknowledged update against a late, stale fill.
   */
  async drop(openid: string): Promise<void> {
    const key = this.keys.profile(openid);
    await this.breaker.run(() => this.redis.hdel(key, 'user', 'id', 'u', 'absent'));
  }
}
