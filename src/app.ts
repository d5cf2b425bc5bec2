import Koa from 'koa';
import type { RequestListener } from 'node:http';
import defaults from '../config/default.json';
import pkg from '../package.json';
import type { Config } from './config';
import { authGuard } from './http/auth';
import { parseBody, readBody } from './http/body';
import { clientIp, clientIpRule } from './http/client-ip';
import { envelope, refusal } from './http/envelope';
import { identityGuard } from './http/identity';
import { isPeerError, LINGER, lingeringClose } from './http/linger';
import { observe } from './http/observe';
import { buildOpenApi } from './http/openapi';
import { rateLimitGuard } from './http/rate-limit';
import type { RouteSpec, RouteState } from './http/route';
import { anyPath, buildRouter, refuseUnrouted, routerPaths } from './http/router';
import { LoadShedder } from './http/shed';
import type { Logger } from './logger';
import { mediaPaths, serveMedia } from './media/serve';
import { DOCS_ASSETS } from './ops/docs';
import { healthRouter, opsRouter } from './ops/routes';
import type { Services } from './services';
import { pushDispatcher, pushEffects } from './users/push-events';
import { userRoutes } from './users/routes';
import { pushReceiver } from './wechat/push/receiver';

export type AppConfig = Pick<Config, 'bodyLimit' | 'authMode' | 'identity' | 'rateLimit' | 'trustProxy' | 'http'> &
  Partial<Pick<Config, 'env' | 'push' | 'wechat'>>;

/** Where the user routes are mounted: POST /service/user/<name>. */
export const API_PREFIX = '/service/user';

function apiRoutes(services: Services): RouteSpec[] {
  return userRoutes(services.users, services.flows, services.rights);
}

/**
 * The OpenAPI document of the routes: served at /openapi.json, rendered into docs/api.md. The
 * ops port is the configured OPS_PORT (config/default.json's for docs/api.md).
 */
export function openApiDocument(routes: RouteSpec[], opsPort: number = defaults.OPS_PORT, push = false): object {
  // Generated from the same specs the router mounts and validates with: it cannot drift.
  return buildOpenApi(routes, {
    title: 'WeChat mini-program user service',
    version: pkg.version,
    description: pkg.description,
    prefix: API_PREFIX,
    opsPort,
    docsAssets: DOCS_ASSETS,
    push,
  });
}

/**
 * Builds the public API app. The middleware order is the request's path, top to bottom. The
 * only GET it answers is /healthz; the operator's endpoints are createOpsApp's, on OPS_PORT.
 */
export function createApp(config: AppConfig, services: Services, logger: Logger): Koa {
  // Koa's own proxy mode would take the left-most X-Forwarded-For entry, which the client writes.
  const app = new Koa({ proxy: false });
  const clientRule = clientIpRule(config.trustProxy);
  logger.info(clientRule.description, 'client IP rule');
  // Programmer errors arrive here (from the envelope); operational ones are answers, not logs.
  app.on('error', (err: Error, ctx?: Koa.Context) => {
    const state = ctx?.state as RouteState | undefined;
    if (isPeerError(err)) return peerError(services, logger, err, state?.requestId);
    logger.error({ err, reqId: state?.requestId, route: state?.route?.name ?? ctx?.path }, 'unexpected error');
  });

  const rateLimits = rateLimitGuard(services.redis, services.keys, services.breaker, config.rateLimit);
  services.metrics.rateLimitKeysSource = rateLimits.localKeys;
  const guards = [
    rateLimits,
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
  const api = buildRouter(API_PREFIX, apiRoutes(services), guards);
  const shedder = new LoadShedder(config.http.maxInflight, () => services.metrics.shedRequests.inc());
  services.metrics.inflightSource = () => shedder.inflight;
  app.use(
    lingeringClose(LINGER, {
      onAborted: () => services.metrics.peerErrors.inc({ kind: 'aborted_body' }),
      onUnread: (outcome) => services.metrics.unreadBodies.inc({ outcome }),
    }),
  );
  app.use(clientIp(clientRule, logger));
  app.use(observe({ logger, onRequest: (o) => services.metrics.observeRequest(o) }));
  // Liveness answers before the load shedder: a probe must not fail because the process is busy.
  const health = healthRouter();
  const healthRoutes = health.routes() as Koa.Middleware;
  app.use((ctx, next) => (ctx.method === 'GET' || ctx.method === 'HEAD' ? healthRoutes(ctx, next) : next()));
  // Uploaded avatars, GET /media/avatar/<name>: on the public listener, outside the envelope.
  app.use(serveMedia(services.media));
  // WeChat's message push, /wechat/push, only while WECHAT_PUSH_TOKEN is set (else a 404 as any
  // unknown path): outside the envelope, the body limits and the rate limits, with its own.
  if (config.push?.token) {
    const { token, aesKeys } = config.push;
    const handle = pushDispatcher(pushEffects(services.rights, logger, services.content), logger);
    app.use(pushReceiver({ token, aesKeys, appid: config.wechat?.appid ?? '' }, handle, logger));
  }
  app.use(envelope());
  app.use(refuseUnrouted(anyPath(routerPaths(api.router, health), mediaPaths), refusal));
  app.use(readBody(config.bodyLimit));
  app.use(shedder.gate());
  app.use(parseBody());
  app.use(api.routes());
  return app;
}

/** A client's connection failed (reset, cut mid-request): counted, and a debug line without a stack. */
function peerError(services: Services, logger: Logger, err: Error, reqId?: string): void {
  services.metrics.peerErrors.inc({ kind: 'socket' });
  const code = (err as NodeJS.ErrnoException).code;
  if (logger.isLevelEnabled('debug')) logger.debug({ reqId, code, err: err.message }, 'client connection error');
}

/**
 * The operator's app, for the OPS_PORT listener: /healthz, /readyz, /metrics, /openapi.json and
 * /docs; no body parser, no envelope (only its 404 and 405 take the envelope's shape): probes and
 * scrapers, never the mini-program. Given the API's handler, it passes the API's paths (and
 * /media/) on to it untouched (same limits, same shedder), so that the console's "try it out"
 * reaches this very process from the operator's side.
 */
export function createOpsApp(
  services: Services,
  logger: Logger,
  api?: RequestListener,
  opsPort?: number,
  /** /wechat/push is mounted on the API (WECHAT_PUSH_TOKEN set): the document lists it. */
  push = false,
): Koa {
  const app = new Koa();
  if (api) {
    app.use((ctx, next) => {
      if (!ctx.path.startsWith(`${API_PREFIX}/`) && !ctx.path.startsWith('/media/')) return next();
      ctx.respond = false;
      return api(ctx.req, ctx.res);
    });
  }
  app.on('error', (err: Error, ctx?: Koa.Context) => {
    if (isPeerError(err)) return peerError(services, logger, err);
    logger.error({ err, route: (ctx?.state as RouteState | undefined)?.ops ?? ctx?.path }, 'unexpected error');
  });
  // Generated from the same specs the router mounts and validates with: it cannot drift.
  const openapi = openApiDocument(apiRoutes(services), opsPort, push);
  const ops = opsRouter({ metrics: services.metrics, readiness: services.readiness, openapi });
  app.use(observe({ logger, onRequest: (o) => services.metrics.observeRequest(o) }));
  app.use(refuseUnrouted(routerPaths(ops), refusal));
  app.use(ops.routes());
  return app;
}
