import Koa from 'koa';
import type { Config } from './config';
import { authGuard } from './http/auth';
import { bodyParser } from './http/body';
import { envelope } from './http/envelope';
import { rateLimitGuard } from './http/rate-limit';
import { buildRouter } from './http/router';
import type { Logger } from './logger';
import type { Services } from './services';
import { userRoutes } from './users/routes';

export type AppConfig = Pick<Config, 'bodyLimit' | 'authMode' | 'rateLimit' | 'trustProxy'>;

/** Builds the Koa app. The middleware order is the request's path, top to bottom. */
export function createApp(config: AppConfig, services: Services, logger: Logger): Koa {
  const app = new Koa({ proxy: config.trustProxy });
  // Programmer errors arrive here (from the envelope); operational ones are answers, not logs.
  app.on('error', (err: Error, ctx?: Koa.Context) => {
    logger.error({ err, route: ctx?.path }, 'unexpected error');
  });

  const guards = [
    rateLimitGuard(services.redis, services.keys, services.breaker, config.rateLimit),
    authGuard(config.authMode, services.sessions),
  ];
  const router = buildRouter('/service/user', userRoutes(services.users), guards);
  app.use(envelope());
  app.use(bodyParser(config.bodyLimit));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
