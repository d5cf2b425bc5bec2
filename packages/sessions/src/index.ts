/**
 * wechat-user-sessions: how services beside the WeChat user service check its session tokens.
 * The user service itself builds on this package, so both always read the same contract.
 */
export { sessionKeys, type SessionKeys } from './keys';
export {
  formatSession,
  parseSession,
  SESSION_JSON_HEAD,
  SESSION_VERSION,
  sessionJsonTail,
  UNIONID_FIELD,
  unionidLiteral,
  type Session,
} from './session';
export { bearerToken, isTokenShaped, TOKEN_PATTERN } from './token';
export { readSession, SessionReader, VERIFY_SESSION_LUA, type RedisClient, type SessionReaderOptions } from './reader';
export {
  requireSession,
  UNAUTHENTICATED,
  type KoaContextLike,
  type RequireSessionOptions,
  type SessionMiddleware,
  type SessionState,
} from './koa';
