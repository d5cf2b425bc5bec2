import Router from '@koa/router';
import type Joi from 'joi';
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

/** Mounts route specs as POST <prefix>/<name>: validate, guards, handle; the envelope renders. */
export function buildRouter(prefix: string, routes: RouteSpec[], guards: RouteGuard[] = []): Router {
  const router = new Router({ prefix });
  for (const route of routes) {
    // Preferences compiled into the schema once: joi would merge them on every validate().
    const input = route.input.prefs(VALIDATION);
    const checks = guards.map((guard) => guard(route)).filter((check) => check !== null);
    router.post(`/${route.name}`, async (ctx) => {
      const state = ctx.state as RouteState;
      state.route = route;
      const { error, value } = validate(route, input, ctx.request.body ?? {});
      // The parsed body is let go before the first await (no local holds it): joi's value keeps
      // only what the route reads, and 16 KiB of `{}` (5,000 objects) must not live while Redis
      // answers. A token field stays, for clients that cannot set Authorization (http/auth.ts).
      ctx.request.body = keepToken(ctx.request.body);
      if (error) throw new ServiceError('invalid', error.message);
      for (const check of checks) await check(ctx, value);
      state.data = await route.handle(value, ctx);
    });
  }
  return router;
}
