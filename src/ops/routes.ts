import Router from '@koa/router';
import type { Context } from 'koa';
import type { RouteState } from '../http/route';
import { mountDocs } from './docs';
import type { Metrics } from './metrics';
import type { Readiness } from './readiness';

export interface OpsDeps {
  metrics: Metrics;
  readiness: Readiness;
  /** The OpenAPI document, generated once from the mounted route specs. */
  openapi: object;
}

const named = (name: string) => (ctx: Context, next: () => Promise<unknown>) => {
  (ctx.state as RouteState).ops = name;
  ctx.set('Cache-Control', 'no-store'); // static assets override this
  return next();
};

/**
 * Liveness, GET /healthz: the process runs its event loop. Deliberately checks nothing else, so
 * that a database outage never gets a healthy process restarted. The one operations endpoint
 * the public port keeps (an orchestrator's probe may only reach that port).
 */
export function healthRouter(): Router {
  const router = new Router();
  router.get('/healthz', named('healthz'), (ctx) => {
    ctx.body = { status: 'ok' };
  });
  return router;
}

/**
 * The operator's endpoints (OPS_PORT), outside the {code,msg,data} envelope: they answer probes and
 * scrapers, not the mini-program. Each names itself in ctx.state.ops for the log and metrics.
 */
export function opsRouter(deps: OpsDeps): Router {
  const router = healthRouter();

  router.get('/readyz', named('readyz'), async (ctx) => {
    const report = await deps.readiness.report();
    ctx.status = report.status === 'ready' ? 200 : 503;
    ctx.body = report;
  });

  router.get('/metrics', named('metrics'), async (ctx) => {
    ctx.type = deps.metrics.contentType;
    ctx.body = await deps.metrics.text();
  });

  router.get('/openapi.json', named('openapi'), (ctx) => {
    ctx.body = deps.openapi;
  });

  mountDocs(router, named);

  return router;
}
