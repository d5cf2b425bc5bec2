import { SessionReader, type RedisClient } from './reader';
import type { Session } from './session';
import { bearerToken } from './token';

/** The document-style code for a missing, unknown or expired token. */
export const UNAUTHENTICATED = -10;

export interface RequireSessionOptions {
  /** An ioredis client (single node or Cluster) on the user service's Redis. */
  redis: RedisClient;
  /** The user service's REDIS_KEY_PREFIX. */
  keyPrefix: string;
  /** HTTP status of a refusal (401 unless given); the body is always {code: -10, msg, data: null}. */
  status?: number;
}

export interface SessionState {
  session: Session;
  user: { user_id: number | null; openid: string };
}

/**
 * What the middleware uses of a Koa context. Structural, so that the package needs no koa types
 * at all and fits koa 2 and 3, @koa/router, and any state type.
 */
export interface KoaContextLike {
  get(field: string): string;
  status: number;
  body: unknown;
  state: object;
}

export type SessionMiddleware = (ctx: KoaContextLike, next: () => Promise<unknown>) => Promise<void>;

/**
 * Koa middleware: checks `Authorization: Bearer <token>` against the user service's Redis, puts
 * the session and its user on ctx.state (SessionState), or answers the {code, msg, data}
 * envelope with code -10. Reading a session also slides its idle timeout. When Redis does not
 * answer: 503 with code -2.
 */
export function requireSession(options: RequireSessionOptions): SessionMiddleware {
  const reader = new SessionReader(options.redis, { keyPrefix: options.keyPrefix });
  const status = options.status ?? 401;
  return async (ctx, next) => {
    const token = bearerToken(ctx.get('authorization'));
    if (!token) {
      ctx.status = status;
      ctx.body = { code: UNAUTHENTICATED, msg: 'missing token: send Authorization: Bearer <token>', data: null };
      return;
    }
    let session: Session | null;
    try {
      session = await reader.verify(token);
    } catch {
      ctx.status = 503;
      ctx.body = { code: -2, msg: 'session store unavailable', data: null };
      return;
    }
    if (!session) {
      ctx.status = status;
      ctx.body = { code: UNAUTHENTICATED, msg: 'invalid or expired token', data: null };
      return;
    }
    const state = ctx.state as SessionState;
    state.session = session;
    state.user = { user_id: session.user_id, openid: session.openid };
    await next();
  };
}
