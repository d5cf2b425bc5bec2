import type { Context, Middleware } from 'koa';
import { BusyError, RateLimitedError, ServiceError } from '../errors';
import { COMMON_CODES, commonCode, RawJson, type RouteState } from './route';

const SUCCESS_PREFIX = '{"code":0,"msg":"success","data":';
const JSON_TYPE = 'application/json; charset=utf-8';

function answer(ctx: Context, status: number, code: number, msg: string): void {
  ctx.status = status;
  ctx.body = { code, msg, data: null };
  (ctx.state as RouteState).code = code;
}

/** An HTTP refusal outside any route (404, 405), in the envelope: its code is its status. */
export function refusal(ctx: Context, status: 404 | 405, msg: string): void {
  answer(ctx, status, status, msg);
}

/** Body-parser (co-body) failures carry a 4xx status; a too-large body keeps its own. */
function clientErrorStatus(err: unknown): number | null {
  const e = err as { status?: number; statusCode?: number };
  const status = e?.status ?? e?.statusCode;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : null;
}

/**
 * The one place every answer is formatted. First in the chain: handlers return data or throw,
 * and this turns either into {code, msg, data}. Operational failures (ServiceError) become
 * their route's document code; anything else is a bug, reported through app 'error' (logged
 * with its stack there) and answered with the route's "other error" code, never the stack.
 */
export function envelope(): Middleware {
  return async (ctx, next) => {
    const state = ctx.state as RouteState;
    // A body may echo the caller's text (a nickname): no browser may take it for HTML.
    ctx.res.setHeader('X-Content-Type-Options', 'nosniff');
    try {
      await next();
    } catch (err) {
      const route = state.route;
      if (err instanceof RateLimitedError) {
        ctx.set('Retry-After', String(err.retryAfterSeconds));
        return answer(ctx, 429, COMMON_CODES.rateLimited.code, err.message);
      }
      if (err instanceof BusyError) {
        ctx.set('Retry-After', String(err.retryAfterSeconds));
        return answer(ctx, 503, 503, err.message);
      }
      if (err instanceof ServiceError) {
        const code = route ? (route.codes[err.kind] ?? commonCode(err.kind)?.code ?? route.codes.other) : -1;
        return answer(ctx, 200, code, err.message);
      }
      const status = clientErrorStatus(err);
      if (status === 413) return answer(ctx, 413, 413, 'request body too large');
      if (status === 408) return answer(ctx, 408, 408, 'request body too slow');
      if (status === 415) return answer(ctx, 415, 415, 'unsupported Content-Encoding: send identity, gzip or deflate');
      if (status) {
        return answer(ctx, 200, -1, err instanceof SyntaxError ? 'malformed JSON body' : 'unreadable request body');
      }
      ctx.app.emit('error', err, ctx);
      return answer(ctx, 200, route?.codes.other ?? -2, 'internal error');
    }

    if ('data' in state) {
      const data = state.data;
      ctx.status = 200;
      state.code = 0;
      if (data instanceof RawJson) {
        // Through Node, as observe.ts says why; set before the body, Koa's setter keeps it.
        ctx.res.setHeader('Content-Type', JSON_TYPE);
        ctx.body = `${SUCCESS_PREFIX}${data.json}}`;
      } else {
        ctx.body = { code: 0, msg: 'success', data: data ?? null };
      }
      return;
    }
    // Nothing answered (refuseUnrouted refuses unknown paths and methods before any body is read).
    if (ctx.status === 404 && ctx.body == null) answer(ctx, 404, 404, `no route for ${ctx.method} ${ctx.path}`);
  };
}
