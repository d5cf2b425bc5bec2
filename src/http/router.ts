import Router from '@koa/router';
import type { RouteSpec, RouteState } from './route';

/** Mounts route specs as POST <prefix>/<name>; the envelope renders what they return. */
export function buildRouter(prefix: string, routes: RouteSpec[]): Router {
  const router = new Router({ prefix });
  for (const route of routes) {
    router.post(`/${route.name}`, async (ctx) => {
      const state = ctx.state as RouteState;
      state.route = route;
      state.data = await route.handle(ctx.request.body, ctx);
    });
  }
  return router;
}
