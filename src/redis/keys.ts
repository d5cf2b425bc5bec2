/**
 * The one place that knows the Redis key layout; sibling services read these keys, so the
 * README documents every one of them. Every key of a user carries the openid as a hash tag
 * ({...}) so that all of one user's keys live in one Redis Cluster slot and a script or
 * pipeline over them never crosses slots.
 */
export interface KeyLayout {
  readonly prefix: string;
  /** Hash {v: row version, user: JSON of the user object as served}; a tombstone has only v. */
  profile(openid: string): string;
  /** Hash {session_key, unionid?}: WeChat's session_key, never sent to a client. */
  wechatSession(openid: string): string;
}

export function keyLayout(prefix: string): KeyLayout {
  return {
    prefix,
    profile: (openid) => `${prefix}user:{${openid}}:profile`,
    wechatSession: (openid) => `${prefix}user:{${openid}}:wx`,
  };
}
