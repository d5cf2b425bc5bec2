import { randomUUID } from 'node:crypto';
import type { Middleware } from 'koa';
import type { Logger } from '../logger';
import type { RouteState } from './route';

/** A caller's id is kept when it looks like an id (a UUID, a trace id); anything else is replaced. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface RequestObservation {
  /** Route name (a RouteSpec's, or an operations endpoint's), or `unmatched`: a bounded set. */
  route: string;
  /** The document code of the answer, or null for answers outside the envelope (docs, metrics). */
  code: number | null;
  status: number;
  seconds: number;
}

export interface ObserveOptions {
  logger: Logger;
  /** Called once per request after the answer is formatted (metrics hook here). */
  onRequest?(observation: RequestObservation): void;
}

/**
 * Outermost middleware: gives the request its id (X-Request-Id in and out) and, once the
 * answer is formatted, writes one log line and reports the request. The line carries the client
 * address, method, path, route, document code, HTTP status and duration, never a body or a header, so neither
 * secrets nor phone numbers can reach it. Operations endpoints (probes, scrapes) log at debug.
 */
export function observe(options: ObserveOptions): Middleware {
  const { logger, onRequest } = options;
  return async (ctx, next) => {
    const start = process.hrtime.bigint();
    const state = ctx.state as RouteState;
    // Node's own header calls: Koa's ctx.get lowercases the name and ctx.set builds arrays per
    // call, on every request (~1 % of a cached launch's CPU with the envelope's two, perf).
    const given = ctx.req.headers['x-request-id'];
    state.requestId = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    ctx.res.setHeader('X-Request-Id', state.requestId);
    let thrown: { status?: unknown } | undefined;
    try {
      await next();
    } catch (err) {
      // Only an operations endpoint can get here (the envelope catches the API's); Koa answers it.
      thrown = (err ?? {}) as { status?: unknown };
      throw err;
    } finally {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const route = state.route?.name ?? state.ops ?? 'unmatched';
      const code = state.code ?? null;
      const status = thrown ? (typeof thrown.status === 'number' ? thrown.status : 500) : ctx.status;
      onRequest?.({ route, code, status, seconds });
      const level = status >= 500 ? 'warn' : state.ops ? 'debug' : 'info';
      // Checked first: at the usual production level the line's object is never even built.
      if (logger.isLevelEnabled(level)) {
        logger[level](
          {
            reqId: state.requestId,
            // Set by clientIp (http/client-ip.ts): a validated address, never a header's raw text.
            ip: ctx.ip,
            method: ctx.method,
            path: ctx.path.slice(0, 200),
            route,
            code,
            status,
            ms: Math.round(seconds * 1e4) / 10,
          },
          'request',
        );
      }
    }
  };
}
