import type { Context } from 'koa';
import { ServiceError } from '../errors';
import type { Session, SessionReader } from '../sessions/store';
import { bearerToken } from '../sessions/token';
import type { RouteGuard } from './route';

export type AuthMode = 'openid' | 'token';

const refuse = (message: string) => new ServiceError('unauthenticated', message);

/** The request's token: the Authorization header, or a `token` body field for clients that cannot set headers. */
export function requestToken(ctx: Context): string | undefined {
  const header = bearerToken(ctx.get('authorization'));
  if (header) return header;
  const field = (ctx.request.body as { token?: unknown } | undefined)?.token;
  return typeof field === 'string' && field ? field : undefined;
}

/** The session the auth guard verified, on a route with `session: 'required'`. */
export function sessionOf(ctx: Context): Session {
  const session = (ctx.state as { session?: Session }).session;
  if (!session) throw new Error(`route ${ctx.path} reads a session it did not require`);
  return session;
}

/**
 * Strict mode (AUTH_MODE=token): a route with an owner runs only for a live session of that
 * very user; anything else is code -10 and the handler never runs. In openid mode (the API
 * document's contract) no route gets a check, except a route that requires a session
 * (`session: 'required'`), which gets one in every mode.
 */
export function authGuard(mode: AuthMode, sessions: SessionReader): RouteGuard {
  return (route) => {
    const owner = route.owner;
    if (route.session === 'required') return (ctx, input) => check(ctx, owner?.(input) ?? {});
    if (mode !== 'token' || !owner) return null;
    return (ctx, input) => check(ctx, owner(input));
  };

  async function check(ctx: Context, owner: { openid?: string; user_id?: number }): Promise<void> {
    const token = requestToken(ctx);
    if (!token) throw refuse('missing token: send Authorization: Bearer <token> or a token field');
    let session: Session | null;
    try {
      session = await sessions.verify(token);
    } catch (err) {
      throw new ServiceError('unavailable', 'the session store is unavailable, try again', { cause: err });
    }
    if (!session) throw refuse('invalid or expired token');
    if (
      (owner.openid !== undefined && owner.openid !== session.openid) ||
      (owner.user_id !== undefined && owner.user_id !== session.user_id)
    ) {
      throw refuse('the token belongs to another user');
    }
    ctx.state.session = session;
  }
}
