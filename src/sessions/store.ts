import {
  parseSession,
  SESSION_JSON_HEAD,
  SessionReader,
  sessionJsonTail,
  UNIONID_FIELD,
  unionidLiteral,
  type SessionKeys,
} from 'wechat-user-sessions';
import type { RedisBreaker } from '../redis/breaker';
import type { RedisClient } from '../redis/client';
import type { KeyLayout } from '../redis/keys';
import { MAX_SESSIONS_PER_USER } from './limits';
import { isTokenShaped, newToken, slotOf, tailTable } from './token';

// The reading side of sessions, their JSON and their keys are the wechat-user-sessions package
// (packages/sessions), which sibling services install: what this service writes is what it reads.
export { SessionReader, SESSION_VERSION, type Session } from 'wechat-user-sessions';
export type { RedisClient };
export { MAX_SESSIONS_PER_USER };

const REVOKE_BATCH = MAX_SESSIONS_PER_USER;
const EVICT_BATCH = MAX_SESSIONS_PER_USER;

/**
 * Lua that stores a session, for every script that issues one (here, and the login scripts of
 * users/cache.ts). KEYS `session` and `index` share a slot (tokens are minted into the slot of
 * their user's keys); ARGV from `at`: token, session key TTL (ms), absolute expiry (ms), now
 * (ms), index TTL (ms), sessions per user, and the session key around a token (head, tail), as
 * SessionDraft.args holds them.
 *
 * The index drops the tokens whose absolute expiry has passed, then ends the oldest sessions
 * beyond the cap before the new one is added, so it never holds more than the cap and the new
 * token is never the one ended (sessions of one millisecond tie on score: they go in token order).
 * The ended sessions' keys are not among KEYS, but they are in the index's slot (their tokens
 * were minted there), so the script stays on one node of a cluster. A token minted before that
 * was so may live elsewhere: its DEL fails (pcall), and its key ends at its own TTL.
 * EVICT_BATCH bounds one script's work even on an index grown before the cap existed.
 */
export const WRITE_SESSION_LUA = `
local function write_session(json, session, index, at)
  redis.call('SET', session, json, 'PX', ARGV[at + 1])
  redis.call('ZREMRANGEBYSCORE', index, 0, ARGV[at + 3])
  local over = redis.call('ZCARD', index) - tonumber(ARGV[at + 5]) + 1
  if over > 0 then
    if over > ${EVICT_BATCH} then over = ${EVICT_BATCH} end
    for _, t in ipairs(redis.call('ZRANGE', index, 0, over - 1)) do
      redis.pcall('DEL', ARGV[at + 6] .. t .. ARGV[at + 7])
    end
    redis.call('ZREMRANGEBYRANK', index, 0, over - 1)
  end
  redis.call('ZADD', index, ARGV[at + 2], ARGV[at])
  redis.call('PEXPIRE', index, ARGV[at + 4])
end
`;

// KEYS[1] session, KEYS[2] the user's index, KEYS[3] the user's cached profile (its slot: see
// users/cache.ts); ARGV[1] the session JSON, then the write's, then ARGV[10] the session's
// user_id. Nothing is stored, and 0 answered, for a user_id a deletion's tombstone names as gone.
const ISSUE = `${WRITE_SESSION_LUA}
if redis.call('HGET', KEYS[3], 'gone') == ARGV[10] then return 0 end
write_session(ARGV[1], KEYS[1], KEYS[2], 2)
return 1`;

// KEYS[1] the user's index; ARGV: batch size, the session key around a token (head, tail).
// Ends the oldest `batch` sessions of the index; answers how many were live, how many tokens
// the index still holds, and the tokens whose keys live in another slot (see WRITE_SESSION_LUA),
// for the caller to end one by one.
const REVOKE = `
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
local ended, elsewhere = 0, {}
for i = 1, #popped, 2 do
  local n = redis.pcall('DEL', ARGV[2] .. popped[i] .. ARGV[3])
  if type(n) == 'number' then ended = ended + n else elsewhere[#elsewhere + 1] = popped[i] end
end
return {ended, redis.call('ZCARD', KEYS[1]), elsewhere}`;

interface IssueCommand {
  sessionIssue(
    key: string,
    index: string,
    profile: string,
    json: string,
    ...args: [...SessionDraft['args'], userId: string]
  ): Promise<number>;
  sessionRevoke(
    index: string,
    batch: number,
    keyHead: string,
    keyTail: string,
  ): Promise<[ended: number, left: number, elsewhere: string[]]>;
}

export interface SessionSettings {
  ttlSeconds: number;
  idleSeconds: number;
  /** Live sessions per user (SESSION_MAX_PER_USER): issuing one more ends the oldest. */
  maxPerUser: number;
}

export interface IssuedSession {
  token: string;
  expires_at: number;
}

/**
 * A session ready to be stored: its token, keys, and JSON around the user_id, which a script
 * may fill in from what it reads (see users/cache.ts). `args` are WRITE_SESSION_LUA's.
 */
export interface SessionDraft extends IssuedSession {
  key: string;
  index: string;
  /**
   * The session JSON is `head + user_id + UNIONID_FIELD + unionid + tail`, unionid as a JSON
   * literal (a string or null): what JSON.stringify of a Session gives, key order kept.
   */
  head: string;
  tail: string;
  args: [
    token: string,
    keyTtlMs: number,
    expiresAtMs: number,
    nowMs: number,
    indexTtlMs: number,
    maxPerUser: number,
    keyHead: string,
    keyTail: string,
  ];
}

const keyParts = new WeakMap<object, [head: string, tail: string]>();

/** The session key around a token, [head, tail], so that a script can name the key of a token it read. */
export function sessionKeyParts(keys: Pick<SessionKeys, 'session'>): [head: string, tail: string] {
  let parts = keyParts.get(keys);
  if (!parts) {
    const [head = '', tail = ''] = keys.session('\0').split('\0');
    parts = [head, tail];
    keyParts.set(keys, parts);
  }
  return parts;
}

/** A new session of `openid`, not yet stored; its token is minted into the slot of the user's keys. */
export function draftSession(
  keys: SessionKeys,
  settings: SessionSettings,
  openid: string,
  nowMs = Date.now(),
): SessionDraft {
  const index = keys.userSessions(openid);
  const token = newToken(slotOf(index));
  const issuedAt = Math.floor(nowMs / 1000);
  const expiresAt = issuedAt + settings.ttlSeconds;
  const ttlMs = settings.ttlSeconds * 1000;
  const keyTtlMs = Math.min(settings.idleSeconds, settings.ttlSeconds) * 1000;
  const [keyHead, keyTail] = sessionKeyParts(keys);
  return {
    token,
    expires_at: expiresAt,
    key: keys.session(token),
    index,
    head: SESSION_JSON_HEAD,
    tail: sessionJsonTail({ openid, issued_at: issuedAt, expires_at: expiresAt, idle_timeout: settings.idleSeconds }),
    // The index's score is the expiry to the millisecond (expires_at is it in whole seconds), so
    // that the cap ends sessions in the order they were issued.
    args: [token, keyTtlMs, nowMs + ttlMs, nowMs, ttlMs, settings.maxPerUser, keyHead, keyTail],
  };
}

/** Issues and ends sessions; owned by the user service. */
export class SessionStore extends SessionReader {
  private readonly issuer: RedisClient & IssueCommand;

  constructor(
    redis: RedisClient,
    protected override readonly keys: KeyLayout,
    private readonly settings: SessionSettings,
    breaker?: RedisBreaker,
  ) {
    super(redis, { keyPrefix: keys.prefix, guard: breaker && ((call) => breaker.run(call)) });
    redis.defineCommand('sessionIssue', { numberOfKeys: 3, lua: ISSUE });
    redis.defineCommand('sessionRevoke', { numberOfKeys: 1, lua: REVOKE });
    this.issuer = redis as RedisClient & IssueCommand;
    tailTable();
  }

  /** A session for `openid`, to be stored by issue() or by a script that ends in WRITE_SESSION_LUA. */
  draft(openid: string, nowMs?: number): SessionDraft {
    return draftSession(this.keys, this.settings, openid, nowMs);
  }

  /**
   * The key of a token a launch presents, when a session of `openid` could live there: tokens
   * are minted into the slot of their user's keys, so one elsewhere is not this user's (and
   * could not share a cluster script with them). Null otherwise, or for no token.
   */
  presentedKey(token: string | undefined, openid: string): string | null {
    if (!isTokenShaped(token)) return null;
    const key = this.keys.session(token);
    return slotOf(key) === slotOf(this.keys.userSessions(openid)) ? key : null;
  }

  /**
   * The presented token's session kept for a launch of `user`: when it is live and of the same
   * openid, user_id and unionid, it is slid (verify) and answered; null otherwise, and nothing
   * changes. The cached launch does the same inside its script (users/cache.ts).
   */
  async keep(
    token: string | undefined,
    user: { user_id: number; openid: string; unionid: string | null },
  ): Promise<IssuedSession | null> {
    if (!this.presentedKey(token, user.openid)) return null;
    const s = await this.verify(token);
    const same =
      s !== null &&
      s.openid === user.openid &&
      s.user_id === user.user_id &&
      unionidLiteral(s.unionid) === unionidLiteral(user.unionid);
    return same ? { token: token!, expires_at: s.expires_at } : null;
  }

  /**
   * Stores a new session in one round trip (one script: the session and its index entry). For
   * a user_id deleted since the caller read it (a deletion's tombstone names it gone), a session
   * without a user_id instead, in a second round trip.
   */
  async issue(
    user: { user_id: number | null; openid: string; unionid?: string | null },
    d: SessionDraft = this.draft(user.openid),
  ): Promise<IssuedSession> {
    const store = (id: string) =>
      this.guarded(() =>
        this.issuer.sessionIssue(
          d.key,
          d.index,
          this.keys.profile(user.openid),
          `${d.head}${id}${UNIONID_FIELD}${unionidLiteral(user.unionid)}${d.tail}`,
          ...d.args,
          id,
        ),
      );
    const id = user.user_id === null ? 'null' : String(user.user_id);
    // A user deleted since the caller read it: the openid has no user now, as for getOpenid
    // before a registration.
    if ((await store(id)) === 0) await store('null');
    return { token: d.token, expires_at: d.expires_at };
  }
  /**
   * The live sessions of the openid, oldest first, for the user's copy of their data (never a
   * token: each is read here and dropped). At most the cap's worth (SESSION_MAX_PER_USER) and a
   * few more, for an index grown before the cap existed. Reads nothing it could slide: a GET.
   */
  async listLive(openid: string): Promise<{ issued_at: number; expires_at: number; idle_timeout: number }[]> {
    const index = this.keys.userSessions(openid);
    return this.guarded(async () => {
      const tokens = await this.issuer.zrange(index, 0, MAX_SESSIONS_PER_USER * 2 - 1);
      const raws = await Promise.all(tokens.map((t) => this.issuer.get(this.keys.session(t))));
      const now = Math.floor(Date.now() / 1000);
      const live = [];
      for (const raw of raws) {
        const s = raw ? parseSession(raw) : null;
        if (s && s.openid === openid && s.expires_at > now) {
          live.push({ issued_at: s.issued_at, expires_at: s.expires_at, idle_timeout: s.idle_timeout });
        }
      }
      return live;
    });
  }

  /**
   * Ends every session of the openid; answers how many were live. The index holds at most
   * SESSION_MAX_PER_USER tokens, so this is one script in the user's slot; only an index grown
   * before the cap existed takes more, in batches of REVOKE_BATCH. A session issued meanwhile
   * is ended too, or else issued after the logout.
   */
  async revokeAll(openid: string): Promise<number> {
    const index = this.keys.userSessions(openid);
    const [head, tail] = sessionKeyParts(this.keys);
    return this.guarded(async () => {
      let total = 0;
      let left: number;
      do {
        const [ended, remaining, elsewhere] = await this.issuer.sessionRevoke(index, REVOKE_BATCH, head, tail);
        left = remaining;
        total += ended;
        // Each in its own slot: one DEL apiece.
        const more = await Promise.all(elsewhere.map((t) => this.issuer.del(this.keys.session(t))));
        total += more.reduce((a, b) => a + b, 0);
      } while (left > 0);
      return total;
    });
  }
}
