/**
 * Operational failures, as typed values. The service layer says what went wrong (kind); each
 * route's table in http/routes.ts says which code of the API document that is, because the
 * document gives the same failure different codes on different routes ("no such user" is -2
 * for loginByOpenid and update, -4 for get).
 */
export type FailureKind =
  | 'invalid' // the parameters are not acceptable
  | 'notFound' // no such user
  | 'duplicate' // several rows for one openid
  | 'badJson' // update: the string is not JSON
  | 'badUpdate' // update: JSON that cannot be applied
  | 'upstream' // WeChat refused or could not be reached
  | 'unavailable' // a backing store failed
  | 'unauthenticated' // strict mode: no valid token, or a token of another user
  | 'rateLimited'; // too many requests from this client or for this openid

export class ServiceError extends Error {
  override name = 'ServiceError';
  constructor(
    readonly kind: FailureKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Over a rate limit: answered with HTTP 429 and Retry-After. */
export class RateLimitedError extends ServiceError {
  constructor(readonly retryAfterSeconds: number) {
    super('rateLimited', `too many requests, retry after ${retryAfterSeconds} s`);
  }
}
