/**
 * The framework's own ceiling on the cached login, for reference: a Koa app with @koa/router
 * and one route that does exactly the Redis floor's work (read and JSON.parse the body, the
 * login script in one round trip, the envelope by string concatenation), and nothing of the
 * service's (no validation, guards, limits, request id, metrics or logging). The service
 * cannot do better than this on the stack the product fixed; the gap between this and the
 * Redis floor is Koa's, the gap between the service and this is the service's own.
 */
import Router from '@koa/router';
import Koa from 'koa';
import { createServer } from 'node:http';
import { loadConfig } from '../../src/config';
import { BAD, cachedLogin, redisStore, runFloor } from './openid-server';

const config = loadConfig();
const { redis, login } = cachedLogin(config);

function readBody(req: Koa.Request['req']): Promise<unknown> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString()));
      } catch {
        resolve(undefined);
      }
    });
  });
}

const router = new Router({ prefix: '/service/user' });
// get too: the bench's readiness probe calls it (the other floors answer any path).
router.post(['/loginByOpenid', '/get'], async (ctx) => {
  ctx.type = 'application/json; charset=utf-8';
  const openid = ((await readBody(ctx.req)) as { openid?: unknown } | undefined)?.openid;
  if (typeof openid !== 'string' || !openid) {
    ctx.body = BAD;
    return;
  }
  ctx.body = await new Promise<string>((resolve) => login(openid, resolve));
});
const app = new Koa();
app.use(router.routes());

runFloor(createServer(app.callback()), config, redisStore(redis));
