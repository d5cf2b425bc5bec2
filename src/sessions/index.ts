/**
 * What a sibling service imports: the session middleware, the reader, the key layout and the
 * session type. Nothing here depends on the rest of the user service.
 */
export { requireSession, UNAUTHENTICATED, type RequireSessionOptions, type SessionState } from './middleware';
export { SessionReader, SESSION_VERSION, type Session, type RedisClient } from './store';
export { bearerToken } from './token';
export { keyLayout, type KeyLayout } from '../redis/keys';
