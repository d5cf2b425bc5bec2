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
  | 'unreadable' // the stored phone does not decrypt for its row
  | 'unauthenticated' // strict mode: no valid token, or a token of another user
  | 'rateLimited' // too many requests from this client, or from it on one user
  | 'contentRefused'; // WeChat's content check refused a nickname

/**
 * What each kind means to a client, for /openapi.json and docs/api.md. Records, so a new kind
 * cannot be added without saying what it means, in English and in Chinese.
 */
export const FAILURE_MEANINGS: Record<FailureKind, string> = {
  invalid: 'a parameter is missing or invalid',
  notFound: 'no such user',
  duplicate: 'several users have this openid',
  badJson: '`update` is a string that is not JSON',
  badUpdate: '`update` is not an object, names a field that may not change, or has an invalid value',
  upstream: 'WeChat refused the code, timed out or could not be reached; `msg` says which',
  unavailable: 'MySQL or Redis is unavailable; try again',
  unreadable: "the user's stored phone number cannot be decrypted (the operator is told)",
  unauthenticated: 'no valid session token of this user (strict mode, AUTH_MODE=token)',
  rateLimited: 'too many requests from this client, or from it on one user (HTTP 429, Retry-After)',
  contentRefused: "refused by WeChat's content check: the nickname was not stored; ask the user for another",
};

/** The same in Chinese, for docs/api.md, whose first readers are mini-program developers. */
export const FAILURE_MEANINGS_ZH: Record<FailureKind, string> = {
  invalid: '提交的参数非法（缺少参数或参数不合法）',
  notFound: '用户不存在',
  duplicate: '返回了多组数据（一个openid对应了多个用户）',
  badJson: 'update参数提交的不是有效的json格式',
  badUpdate: 'json处理错误：update 不是对象、含有不可修改的字段或取值非法',
  upstream: '微信拒绝了 code、超时或无法连接，详见 msg',
  unavailable: 'MySQL 或 Redis 不可用，请稍后重试',
  unreadable: '该用户存储的手机号无法解密（已记录错误日志）',
  unauthenticated: '没有该用户的有效会话 token（严格模式，AUTH_MODE=token）',
  rateLimited: '请求过于频繁（按客户端 IP 或 openid 限流），HTTP 429，见 Retry-After',
  contentRefused: '内容安全检测未通过：昵称未保存，请用户换一个',
};

/** A route's "other error" code (`other` in its table): any failure the table does not name. */
export const OTHER_FAILURE_MEANING = {
  en: 'other error: `msg` says what, e.g. MySQL or Redis unavailable',
  zh: '其他错误，详情见错误输出（msg），例如 MySQL 或 Redis 不可用',
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

/**
 * No room for this now (every slot of a bounded resource, such as uploads, is taken): answered
 * with HTTP 503 and Retry-After, as the load shedder answers.
 */
export class BusyError extends ServiceError {
  constructor(
    message: string,
    readonly retryAfterSeconds = 1,
  ) {
    super('unavailable', message);
  }
}
