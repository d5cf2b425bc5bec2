/**
 * The session JSON stored at `<prefix>session:{<token>}`: the contract between the user service,
 * which writes it, and every reader. Readers ignore versions they do not know; a field added
 * within a version changes nothing for a reader that does not know it, so it keeps the version.
 */
export interface Session {
  /** Layout version of this JSON. */
  v: typeof SESSION_VERSION;
  /** null while the openid has no registered user (a session issued by getOpenid). */
  user_id: number | null;
  /** WeChat's unionid of the user, null when unknown (or the session predates the field). */
  unionid: string | null;
  openid: string;
  /** Unix seconds. */
  issued_at: number;
  /** Unix seconds: the absolute end, whatever the activity. */
  expires_at: number;
  /** Seconds without use after which the session ends before expires_at. */
  idle_timeout: number;
}

export const SESSION_VERSION = 1;

/**
 * How the writer lays the JSON out: `SESSION_JSON_HEAD + user_id + UNIONID_FIELD + unionid
 * literal + sessionJsonTail(...)`, which is JSON.stringify of a Session, key order kept. Apart
 * so that a Lua script may put in a user_id and unionid it reads from Redis.
 */
export const SESSION_JSON_HEAD = `{"v":${SESSION_VERSION},"user_id":`;
export const UNIONID_FIELD = ',"unionid":';

export function sessionJsonTail(s: Pick<Session, 'openid' | 'issued_at' | 'expires_at' | 'idle_timeout'>): string {
  return (
    `,"openid":${JSON.stringify(s.openid)},"issued_at":${s.issued_at},` +
    `"expires_at":${s.expires_at},"idle_timeout":${s.idle_timeout}}`
  );
}

/** A unionid as the JSON literal the session JSON holds. */
export const unionidLiteral = (unionid: string | null | undefined): string =>
  unionid ? JSON.stringify(unionid) : 'null';

/** The session JSON of `s`, exactly as the user service writes it. */
export function formatSession(s: Omit<Session, 'v'>): string {
  const id = s.user_id === null ? 'null' : String(s.user_id);
  return `${SESSION_JSON_HEAD}${id}${UNIONID_FIELD}${unionidLiteral(s.unionid)}${sessionJsonTail(s)}`;
}

const isTime = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0;

/**
 * A stored session JSON as a Session, or null when it is not one this reader knows: not JSON,
 * another version, or a field of the wrong type. Fields it does not know are left out.
 */
export function parseSession(raw: string): Session | null {
  let s: unknown;
  try {
    s = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof s !== 'object' || s === null || Array.isArray(s)) return null;
  const { v, user_id, unionid, openid, issued_at, expires_at, idle_timeout } = s as Record<string, unknown>;
  if (v !== SESSION_VERSION) return null;
  if (user_id !== null && !Number.isSafeInteger(user_id)) return null;
  if (unionid !== undefined && unionid !== null && typeof unionid !== 'string') return null;
  if (typeof openid !== 'string' || !openid) return null;
  if (!isTime(issued_at) || !isTime(expires_at) || !isTime(idle_timeout)) return null;
  return {
    v,
    user_id: user_id as number | null,
    unionid: unionid ?? null,
    openid,
    issued_at,
    expires_at,
    idle_timeout,
  };
}
