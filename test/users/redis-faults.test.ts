import { expect } from 'chai';
import type { Knex } from 'knex';
import Redis from 'ioredis';
import { keyLayout } from '../../src/redis/keys';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { TestRedisServer } from '../helpers/redis-server';
import { startService, type TestService } from '../helpers/service';
import { testDb } from '../helpers/stores';
import { eventually, timed } from '../helpers/wait';

const COMMAND_TIMEOUT_MS = 200;
// A read may wait for one Redis command to time out before it goes to MySQL.
const READ_BOUND_MS = 800;

function profile(openid: string) {
  return loginBody(openid, { nick_name: 'cached' });
}

describe('Redis faults (a redis-server owned by this test)', function () {
  this.timeout(60_000);
  let redisServer: TestRedisServer;
  let svc: TestService;
  let db: Knex;
  let probe: Redis;
  const keys = keyLayout(testConfig().redis.keyPrefix);

  before(async () => {
    redisServer = await TestRedisServer.start();
    svc = await startService({ REDIS_URL: redisServer.url, REDIS_COMMAND_TIMEOUT_MS: COMMAND_TIMEOUT_MS });
    db = testDb();
    probe = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
    probe.on('error', () => {});
  });
  after(async () => {
    redisServer.resume();
    probe.disconnect();
    await db.destroy();
    await svc.stop();
    await redisServer.kill();
  });

  describe('paused (SIGSTOP)', () => {
    afterEach(() => redisServer.resume());

    it('answers reads from MySQL within a bounded time, and fills again once resumed', async () => {
      const openid = newOpenid();
      await svc.call('login', profile(openid));
      await svc.call('logout', { openid }); // nothing cached
      await db('users').where({ openid }).update({ nick_name: 'from MySQL' });

      redisServer.pause();
      for (let i = 0; i < 3; i++) {
        for (const route of ['loginByOpenid', 'get']) {
          const { value, ms } = await timed(() => svc.call(route, { openid }));
          expect(value.body.code).to.equal(0);
          expect(value.body.data.nick_name).to.equal('from MySQL');
          expect(ms).to.be.below(READ_BOUND_MS);
        }
      }
      redisServer.resume();
      await eventually(async () => {
        await svc.call('get', { openid });
        const cached = await probe.hget(keys.profile(openid), 'user');
        return cached !== null && JSON.parse(cached).nick_name === 'from MySQL';
      });
    });

    it('answers a launch that presents its token without one, storing nothing, and keeps it once resumed', async () => {
      const openid = newOpenid();
      const { token, user_id } = (await svc.call('login', profile(openid))).body.data;
      const bearer = { headers: { authorization: `Bearer ${token}` } };
      const sessions = keys.userSessions(openid);
      expect(await probe.zcard(sessions)).to.equal(1);

      redisServer.pause();
      for (let i = 0; i < 3; i++) {
        const { value, ms } = await timed(() => svc.call('loginByOpenid', { openid }, bearer));
        expect(value.body.code, value.body.msg).to.equal(0);
        expect(value.body.data.user_id).to.equal(user_id);
        // Redis cannot tell whether the token is live: no token is answered rather than a
        // stale one, and the launch does not wait on the keep and on a new session both.
        expect(value.body.data).not.to.have.property('token');
        expect(ms).to.be.below(READ_BOUND_MS);
      }
      redisServer.resume();

      // Once the breaker lets calls through again, the launch keeps the very token; nothing
      // queued while paused stored a session when Redis came back: still the one.
      let answered: string | undefined;
      await eventually(async () => {
        answered = (await svc.call('loginByOpenid', { openid }, bearer)).body.data.token;
        return answered !== undefined;
      });
      expect(answered).to.equal(token);
      expect(await probe.zcard(sessions)).to.equal(1);
    });

    it('refuses an update while Redis is paused, changing nothing, and reads stay fresh after', async () => {
      const openid = newOpenid();
      const { user_id } = (await svc.call('login', profile(openid))).body.data;
      const [before] = await db('users').where({ id: user_id });

      redisServer.pause();
      const { value, ms } = await timed(() => svc.call('update', { user_id, update: { nick_name: 'during pause' } }));
      expect(value.body.code).to.equal(-2);
      expect(ms).to.be.below(5_000);
      const [after] = await db('users').where({ id: user_id });
      expect(after).to.deep.equal(before);
      redisServer.resume();

      // The tombstone the refused update sent while paused must not disable the cache.
      await eventually(async () => (await svc.call('get', { openid })).body.data.nick_name === 'cached');
      await eventually(async () => {
        await svc.call('get', { openid });
        return (await probe.hget(keys.profile(openid), 'user')) !== null;
      });

      const ok = await svc.call('update', { user_id, update: { nick_name: 'after pause' } });
      expect(ok.body.code).to.equal(0);
      expect((await svc.call('get', { openid })).body.data.nick_name).to.equal('after pause');
    });
  });

  describe('killed', () => {
    it('keeps answering reads from MySQL fast, does not crash, and caches again after restart', async () => {
      const openid = newOpenid();
      await svc.call('login', profile(openid));
      await redisServer.kill();

      for (let i = 0; i < 5; i++) {
        for (const route of ['loginByOpenid', 'get']) {
          const { value, ms } = await timed(() => svc.call(route, { openid }));
          expect(value.body.code).to.equal(0);
          expect(ms).to.be.below(READ_BOUND_MS);
        }
      }
      // Writes that need Redis say so instead of hanging.
      expect((await svc.call('logout', { openid })).body.code).to.equal(-2);
      const { user_id } = (await svc.call('get', { openid })).body.data;
      expect((await svc.call('update', { user_id, update: { phone: '1' } })).body.code).to.equal(-2);
      // Registration does not need Redis.
      const other = newOpenid();
      expect((await svc.call('login', profile(other))).body.code).to.equal(0);

      await redisServer.start();
      await eventually(async () => {
        await svc.call('get', { openid });
        return (await probe.hget(keys.profile(openid), 'user').catch(() => null)) !== null;
      });
    });
  });
});
