import Koa from 'koa';
import type { Logger } from 'pino';
import { bodyParser } from './http/body';
import pkg from '../package.json';
import { envelope } from './http/envelope';
import { observe } from './http/observe';
import { buildOpenApi } from './http/openapi';
import type { RouteState } from './http/route';
import { buildRouter } from './http/router';
import type { Metrics } from './ops/metrics';
import type { Readiness } from './ops/readiness';
import { opsRouter } from './ops/routes';
import { userRoutes } from './users/routes';
import type { UserService } from './users/service';

export interface AppDeps {
  logger: Logger;
  users: UserService;
  bodyLimit: string;
  metrics: Metrics;
  readiness: Readiness;
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

  const prefix = '/service/user';
  const routes = userRoutes(deps.users);
  const router = buildRouter(prefix, routes);
  // Generated from the same specs the router mounts and validates with: it cannot drift.
  const openapi = buildOpenApi(routes, {
    title: 'WeChat mini-program user service',
    version: pkg.version,
    description: pkg.description,
    prefix,
  });
  const ops = opsRouter({ metrics: deps.metrics, readiness: deps.readiness, openapi });
  app.use(observe({ logger: deps.logger, onRequest: (o) => deps.metrics.observeRequest(o) }));
  // Probes, metrics and docs answer for themselves; everything else goes through the envelope.
  app.use(ops.routes());
  app.use(envelope());
  app.use(bodyParser(deps.bodyLimit));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
