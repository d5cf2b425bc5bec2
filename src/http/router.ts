import Router from '@koa/router';
import type Joi from 'joi';
import type { Context, Middleware } from 'koa';
import { ServiceError } from '../errors';
import type { RouteGuard, RouteSpec, RouteState } from './route';

/** How every route schema validates a body (the shortcuts are held to the same). */
export const VALIDATION: Joi.ValidationOptions = {
  abortEarly: true,
  convert: true,
  // Clients may send more than a route reads (a token, a timestamp); extra fields are ignored.
  allowUnknown: true,
  stripUnknown: true,
};

function keepToken(body: unknown): { token: string } | undefined {
  const token = (body as { token?: unknown } | undefined)?.token;
  return typeof token === 'string' ? { token } : undefined;
}

/** The route's shortcut when it answers, else its schema (see RouteSpec.fastInput). */
function validate(route: RouteSpec, input: Joi.ObjectSchema, body: unknown): Joi.ValidationResult {
  const fast = route.fastInput?.(body);
  return fast === undefined ? input.validate(body) : { error: undefined, value: fast };
}

/** The API's routes: @koa/router's, and a dispatcher that takes the exact paths past it. */
export interface ApiRouter {
  /** Every route, mounted as POST <prefix>/<name>: for the path tables and any other spelling. */
  router: Router;
  routes(): Middleware;
}

/** Mounts route specs as POST <prefix>/<name>: validate, guards, handle; the envelope renders. */
export function buildRouter(prefix: string, routes: RouteSpec[], guards: RouteGuard[] = []): ApiRouter {
  const router = new Router({ prefix });
  const exact = new Map<string, Middleware>();
  for (const route of routes) {
    // Preferences compiled into the schema once: joi would merge them on every validate().
    const input = route.input.prefs(VALIDATION);
    const checks = guards.map((guard) => guard(route)).filter((check) => check !== null);
    const handler: Middleware = async (ctx) => {
      const state = ctx.state as RouteState;
      state.route = route;
      const { error, value } = validate(route, input, ctx.request.body ?? {});
      // The parsed body is let go before the first await (no local holds it): joi's value keeps
      // only what the route reads, and 16 KiB of `{}` (5,000 objects) must not live while Redis
      // answers. A token field stays, for clients that cannot set Authorization (http/auth.ts).
      ctx.request.body = keepToken(ctx.request.body);
      if (error) throw new ServiceError('invalid', error.message);
      for (const check of checks) {
        // A check with nothing to wait for (the usual login in openid mode) answers undefined.
        const pending = check(ctx, value);
        if (pending) await pending;
      }
      state.data = await route.handle(value, ctx);
    };
    router.post(`/${route.name}`, handler);
    exact.set(`${router.opts.prefix ?? ''}/${route.name}`, handler);
  }
  return {
    router,
    routes() {
      const dispatch = router.routes() as Middleware;
      // Nearly every request names its route exactly: one lookup, where @koa/router would match
      // the path against every route, read the Host header and compose a chain for the request
      // (5 % of a cached launch's CPU, docs/performance.md). Any other spelling it still takes
      // (a trailing slash, another case), so the two always agree.
      return (ctx, next) => {
        const handler = ctx.method === 'POST' ? exact.get(ctx.path) : undefined;
        return handler ? handler(ctx, next) : dispatch(ctx, next);
      };
    },
  };
}

/** The methods a listener answers on a path, or null when it has no such path. */
export type PathMethods = (path: string) => readonly string[] | null;

/** Paths each routerPaths remembers: a route with a parameter (/docs/:asset) has unbounded ones. */
const PATHS_REMEMBERED = 256;

/**
 * The paths of koa-routers, with their methods (a GET route answers HEAD too, as @koa/router
 * does). Every request asks, and matching walks every layer's regex: a path found is remembered
 * (the cached launch's CPU, paired A/B: 2-4 % less). A path not found is not: those are the
 * callers' to choose, without end.
 */
export function routerPaths(...routers: Router[]): PathMethods {
  const known = new Map<string, readonly string[]>();
  return (path) => {
    const remembered = known.get(path);
    if (remembered) return remembered;
    const methods = new Set<string>();
    for (const router of routers) {
      for (const layer of router.match(path, 'GET').path) for (const method of layer.methods) methods.add(method);
    }
    if (methods.size === 0) return null;
    const found = [...methods];
    if (known.size < PATHS_REMEMBERED) known.set(path, found);
    return found;
  };
}

/** The union of several listeners' parts (each a PathMethods). */
export function anyPath(...tables: PathMethods[]): PathMethods {
  return (path) => {
    let found: readonly string[] | null = null;
    for (const table of tables) {
      const methods = table(path);
      // The usual path is one listener's: its answer as it is, nothing allocated.
      if (methods) found = found ? [...new Set([...found, ...methods])] : methods;
    }
    return found;
  };
}

/**
 * Refuses, before any body is read, a request no route of the listener would take: 404 for a
 * path it does not have, else 405 with `Allow` for a method it does not answer there. Any method
 * Node's parser accepts gets here (TRACE, QUERY, PROPFIND, OPTIONS...): @koa/router's
 * allowedMethods() answered those outside its own list with 501, so any client could raise the
 * service's 5xx count at will. `answer` formats the refusal (the envelope, on the API port).
 */
export function refuseUnrouted(
  paths: PathMethods,
  answer: (ctx: Context, status: 404 | 405, message: string) => void,
): Middleware {
  return (ctx, next) => {
    const methods = paths(ctx.path);
    if (!methods) return answer(ctx, 404, `no route for ${ctx.method} ${ctx.path}`);
    if (methods.includes(ctx.method)) return next();
    const allow = [...methods].sort().join(', ');
    ctx.set('Allow', allow);
    return answer(ctx, 405, `method ${ctx.method} not allowed on ${ctx.path}: use ${allow}`);
  };
}
