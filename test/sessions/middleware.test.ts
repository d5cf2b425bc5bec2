import { expect } from 'chai';
import type { Server } from 'node:http';
import Redis from 'ioredis';
import Koa from 'koa';
// What a sibling service imports: the package, against this service's Redis.
import { requireSession, type SessionState } from 'wechat-user-sessions';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { TestRedisServer } from '../helpers/redis-server';
import { startService, type TestService } from '../helpers/service';
import { testRedis, untilAnswering } from '../helpers/stores';
import type { RedisClient } from '../../src/redis/client';

/** A tiny sibling service: its own Koa app and its own ioredis client on the same Redis. */
async function sibling(redis: RedisClient, keyPrefix: string) {
  redis.on('error', () => {});
  const app = new Koa();
  app.use(requireSession({ redis, keyPrefix }));
  app.use((ctx) => {
    const state = ctx.state as SessionState;
    ctx.body = { code: 0, msg: 'success', data: { user: state.user, expires_at: state.session.expires_at } };
  });
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/orders`;
  return {
    async get(token?: string) {
      const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      return { status: res.status, body: (await res.json()) as { code: number; msg: string; data: any } };
    },
    async close() {
      await new Promise((r) => server.close(r));
      redis.disconnect();
    },
  };
}

describe('requireSession in a sibling Koa service', () => {
  let svc: TestService;
  let other: Awaited<ReturnType<typeof sibling>>;

  before(async () => {
    svc = await startService();
    const config = testConfig();
    const redis = testRedis({ failFast: true });
    redis.on('error', () => {});
    await untilAnswering(redis);
    other = await sibling(redis, config.redis.keyPrefix);
  });
  after(async () => {
    await other.close();
    await svc.stop();
  });

  it("puts the token's user on ctx.state", async () => {
    const openid = newOpenid();
    const login = (await svc.call('login', loginBody(openid))).body.data;
    const res = await other.get(login.token);
    expect(res.status).to.equal(200);
    expect(res.body.data).to.deep.equal({
      user: { user_id: login.user_id, openid },
      expires_at: login.token_expires_at,
    });
  });

  it('answers the envelope with code -10 for a missing, unknown or ended token', async () => {
    const missing = await other.get();
    expect(missing.status).to.equal(401);
    expect(missing.body).to.include({ code: -10, data: null });
    expect((await other.get('x'.repeat(32))).body.code).to.equal(-10);
    expect((await other.get('short')).body.code).to.equal(-10);

    const openid = newOpenid();
    const { token } = (await svc.call('login', loginBody(openid))).body.data;
    expect((await other.get(token)).body.code).to.equal(0);
    await svc.call('logout', { openid });
    const ended = await other.get(token);
    expect(ended.status).to.equal(401);
    expect(ended.body.code).to.equal(-10);
  });

  it('answers 503 when its Redis is down, without crashing', async () => {
    const redisServer = await TestRedisServer.start();
    const lonely = await sibling(
      new Redis(redisServer.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 300 }),
      'x:',
    );
    try {
      await redisServer.kill();
      const res = await lonely.get('y'.repeat(32));
      expect(res.status).to.equal(503);
      expect(res.body.code).to.equal(-2);
    } finally {
      await lonely.close();
    }
  });
});
