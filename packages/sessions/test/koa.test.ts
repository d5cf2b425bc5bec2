import { expect } from 'chai';
import type { Server } from 'node:http';
import Redis from 'ioredis';
import Koa from 'koa';
import { formatSession, requireSession, sessionKeys, type RedisClient, type SessionState } from '../src';
import { cleanUp, newToken, PREFIX, testRedis } from './redis';

const keys = sessionKeys(PREFIX);

/** A Koa app behind requireSession, answering what it put on ctx.state. */
async function app(redis: RedisClient, status?: number) {
  const koa = new Koa();
  koa.use(requireSession({ redis, keyPrefix: PREFIX, status }));
  koa.use((ctx) => {
    const state = ctx.state as SessionState;
    ctx.body = { code: 0, data: { user: state.user, session: state.session } };
  });
  const server: Server = koa.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  return {
    async get(authorization?: string) {
      const res = await fetch(url, { headers: authorization ? { authorization } : {} });
      return { status: res.status, body: (await res.json()) as { code: number; data: any } };
    },
    close: () => new Promise((r) => server.close(r)),
  };
}

describe('wechat-user-sessions: requireSession (Koa)', () => {
  let redis: RedisClient;
  let guarded: Awaited<ReturnType<typeof app>>;

  before(async () => {
    redis = testRedis();
    guarded = await app(redis);
  });
  after(async () => {
    await guarded.close();
    await cleanUp(redis);
    redis.disconnect();
  });

  it("puts a live token's session and user on ctx.state", async () => {
    const issued = Math.floor(Date.now() / 1000);
    const s = { user_id: 9, unionid: 'u9', openid: 'o9', issued_at: issued, expires_at: issued + 60, idle_timeout: 30 };
    const token = newToken();
    await redis.set(keys.session(token), formatSession(s), 'PX', 30_000);
    const res = await guarded.get(`Bearer ${token}`);
    expect(res.status).to.equal(200);
    expect(res.body.data).to.deep.equal({ user: { user_id: 9, openid: 'o9' }, session: { v: 1, ...s } });
  });

  it('answers 401 and code -10 for a missing, malformed or unknown token, without calling next', async () => {
    for (const header of [undefined, 'Basic x', 'Bearer short', `Bearer ${newToken()}`]) {
      const res = await guarded.get(header);
      expect(res.status, header).to.equal(401);
      expect(res.body, header).to.deep.include({ code: -10, data: null });
    }
  });

  it('answers the status it is given for a refusal', async () => {
    const other = await app(redis, 200);
    try {
      const res = await other.get(`Bearer ${newToken()}`);
      expect(res.status).to.equal(200);
      expect(res.body.code).to.equal(-10);
    } finally {
      await other.close();
    }
  });

  it('answers 503 and code -2 when Redis does not answer', async () => {
    const down = new Redis({ port: 9, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    const lonely = await app(down);
    try {
      const res = await lonely.get(`Bearer ${newToken()}`);
      expect(res.status).to.equal(503);
      expect(res.body).to.deep.include({ code: -2, data: null });
    } finally {
      await lonely.close();
      down.disconnect();
    }
  });
});
