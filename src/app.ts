import Koa from 'koa';
import pkg from '../package.json';
import type { Config } from './config';
import { authGuard } from './http/auth';
import { bodyParser } from './http/body';
import { envelope } from './http/envelope';
import { identityGuard } from './http/identity';
import { observe } from './http/observe';
import { buildOpenApi } from './http/openapi';
import { rateLimitGuard } from './http/rate-limit';
import type { RouteState } from './http/route';
import { buildRouter } from './http/router';
import type { Logger } from './logger';
import { opsRouter } from './ops/routes';
import type { Services } from './services';
import { userRoutes } from './users/routes';

export type AppConfig = Pick<Config, 'bodyLimit' | 'authMode' | 'identity' | 'rateLimit' | 'trustProxy'> &
  Partial<Pick<Config, 'env'>>;

/** Builds the Koa app. The middleware order is the request's path, top to bottom. */
export function createApp(config: AppConfig, services: Services, logger: Logger): Koa {
  const app = new Koa({ proxy: config.trustProxy });
  // Programmer errors arrive here (from the envelope); operational ones are answers, not logs.
  app.on('error', (err: Error, ctx?: Koa.Context) => {
    const state = ctx?.state as RouteState | undefined;
    logger.error({ err, reqId: state?.requestId, route: state?.route?.name ?? ctx?.path }, 'unexpected error');
  });

  const prefix = '/service/user';
  const routes = userRoutes(services.users);
  const guards = [
    rateLimitGuard(services.redis, services.keys, services.breaker, config.rateLimit),
    authGuard(config.authMode, services.sessions),
    identityGuard(
      { authMode: config.authMode, ...config.identity },
      { sessions: services.sessions, exchangeCode: (code) => services.users.proveCode(code) },
    ),
  ];
  if (config.env === 'production' && config.authMode === 'openid') {
    logger.warn(
      { AUTH_MODE: 'openid' },
      'AUTH_MODE=openid: anyone who knows an openid can log in as its user, read its phone number and ' +
        'change its profile; set AUTH_MODE=token once the mini-program sends a js_code or its session token',
    );
  }
  if (config.identity.trustedOpenidHeader) {
    logger.info(
      { header: config.identity.trustedOpenidHeader },
      'trusting the gateway header for the openid: only safe where the gateway overwrites the client copy',
    );
  }
  const router = buildRouter(prefix, routes, guards);
  // Generated from the same specs the router mounts and validates with: it cannot drift.
  const openapi = buildOpenApi(routes, {
    title: 'WeChat mini-program user service',
    version: pkg.version,
    description: pkg.description,
    prefix,
  });
  const ops = opsRouter({ metrics: services.metrics, readiness: services.readiness, openapi });
  app.use(observe({ logger, onRequest: (o) => services.metrics.observeRequest(o) }));
  // Probes, metrics and docs answer for themselves; everything else goes through the envelope.
  // They are all GET and the API is all POST: an API call does not pay for matching them.
  const opsRoutes = ops.routes() as Koa.Middleware;
  app.use((ctx, next) => (ctx.method === 'GET' || ctx.method === 'HEAD' ? opsRoutes(ctx, next) : next()));
  app.use(envelope());
  app.use(bodyParser(config.bodyLimit));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
