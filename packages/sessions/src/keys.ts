/**
 * The session keys of the user service's Redis, under its REDIS_KEY_PREFIX. Both are
 * hash-tagged: a session key has the Redis Cluster slot of its token, the index the slot of its
 * openid (the user service mints each token into its user's slot, so the two share a node).
 */
export interface SessionKeys {
  readonly prefix: string;
  /** String: the session JSON (see session.ts), keyed by its bearer token. */
  session(token: string): string;
  /** Sorted set of a user's tokens, scored by absolute expiry (ms): what logout ends. */
  userSessions(openid: string): string;
}

export function sessionKeys(prefix: string): SessionKeys {
  return {
    prefix,
    session: (token) => `${prefix}session:{${token}}`,
    userSessions: (openid) => `${prefix}user:{${openid}}:sessions`,
  };
}
