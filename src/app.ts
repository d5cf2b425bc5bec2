import Koa from 'koa';
import type { Logger } from 'pino';
import { bodyParser } from './http/body';
import { envelope } from './http/envelope';
import { observe } from './http/observe';
import type { RouteState } from './http/route';
import { buildRouter } from './http/router';
import { userRoutes } from './users/routes';
import type { UserService } from './users/service';

export interface AppDeps {
  logger: Logger;
  users: UserService;
  bodyLimit: string;
}

/** Builds the Koa app. The middleware order is the request's path, top to bottom. */
export function createApp(deps: AppDeps): Koa {
  const app = new Koa();
  app.proxy = true;
  // Programmer errors arrive here (from the envelope); operational ones are answers, not logs.
  app.on('error', (err: Error, ctx?: Koa.Context) => {
    const state = ctx?.state as RouteState | undefined;
    deps.logger.error({ err, reqId: state?.requestId, route: state?.route?.name ?? ctx?.path }, 'unexpected error');
  });

  const router = buildRouter('/service/user', userRoutes(deps.users));
  app.use(observe({ logger: deps.logger }));
  app.use(envelope());
  app.use(bodyParser(deps.bodyLimit));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
