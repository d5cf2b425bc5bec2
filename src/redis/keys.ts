import { sessionKeys, type SessionKeys } from 'wechat-user-sessions';

/**
 * The one place that knows the Redis key layout; sibling services read these keys, so the
 * README documents every one of them. User and session keys are hash-tagged ({...}): all of
 * one user's keys share the slot of its openid, a session key has the slot of its token, so a
 * script or a multi-key command never crosses Redis Cluster slots. Rate-limit counters are
 * single keys touched by one command each, and need no tag.
 */
/** The session keys (`session`, `userSessions`) are the wechat-user-sessions package's. */
export interface KeyLayout extends SessionKeys {
  /** Hash {v: row version, id: user_id, user: JSON of the user as served}; a tombstone has only v. */
  profile(openid: string): string;
  /** Hash {session_key, unionid?}: WeChat's session_key, never sent to a client. */
  wechatSession(openid: string): string;
  /** Prefix of the rate limiter's counters (rate-limiter-flexible appends `:<key>`). */
  rateLimit(scope: string): string;
  /**
   * String: the app's WeChat access token, shared by every process and instance; its TTL is
   * WeChat's expires_in. Sibling services may read it; only src/wechat/access-token.ts writes it.
   */
  wechatAccessToken(appid: string): string;
  /** String: a random value, held (SET NX PX) by the one process refreshing that token. */
  wechatAccessTokenLock(appid: string): string;
  /** String: the errcode of WeChat's last refusal of that token, for a short backoff (PX). */
  wechatAccessTokenRefused(appid: string): string;
  /**
   * String: WeChat's msgSecCheck verdict (pass, review or risky) on a text, by the SHA-256 (hex)
   * of the text, for CONTENT_CACHE_TTL_SECONDS: a repeated nickname costs no call.
   */
  contentVerdict(digest: string): string;
  /**
   * String (JSON {user_id, openid, url}): whose avatar a mediaCheckAsync trace_id is about, kept
   * until WeChat's verdict has come (it comes within 30 minutes; the key lives an hour).
   */
  mediaCheck(traceId: string): string;
}

export function keyLayout(prefix: string): KeyLayout {
  return {
    ...sessionKeys(prefix),
    profile: (openid) => `${prefix}user:{${openid}}:profile`,
    wechatSession: (openid) => `${prefix}user:{${openid}}:wx`,
    rateLimit: (scope) => `${prefix}ratelimit:${scope}`,
    wechatAccessToken: (appid) => `${prefix}wechat:{${appid}}:access_token`,
    wechatAccessTokenLock: (appid) => `${prefix}wechat:{${appid}}:access_token:lock`,
    wechatAccessTokenRefused: (appid) => `${prefix}wechat:{${appid}}:access_token:refused`,
    contentVerdict: (digest) => `${prefix}content:text:${digest}`,
    mediaCheck: (traceId) => `${prefix}content:media:${traceId}`,
  };
}
