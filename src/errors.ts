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
  | 'rateLimited'; // too many requests from this client, or from it on one user

/**
 * What each kind means to a client, for the API page (src/http/openapi.ts). A Record, so a new
 * kind cannot be added without saying what it means.
 */
export const FAILURE_MEANINGS: Record<FailureKind, string> = {
  invalid: 'a parameter is missing or invalid (提交的参数非法)',
  notFound: 'no such user',
  duplicate: 'several users have this openid (一个openid对应了多个用户)',
  badJson: '`update` is a string that is not JSON',
  badUpdate: '`update` is not an object, names a field that may not change, or has an invalid value',
  upstream: 'WeChat refused the code, timed out or could not be reached; `msg` says which',
  unavailable: 'MySQL or Redis is unavailable; try again',
  unauthenticated: 'no valid session token of this user (strict mode, AUTH_MODE=token)',
  rateLimited: 'too many requests from this client, or from it on one user (HTTP 429, Retry-After)',
};

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
