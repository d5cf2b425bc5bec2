import { expect } from 'chai';
import IORedis from 'ioredis';
import type { Knex } from 'knex';
import type { RedisClient as Redis } from '../../src/redis/client';
import { createApp } from '../../src/app';
import { ServiceError } from '../../src/errors';
import { createLogger } from '../../src/logger';
import { createServices, type ServiceOverrides, type Services } from '../../src/services';
import type { UserRow } from '../../src/users/model';
import { UserRepository } from '../../src/users/repository';
import type { UserService } from '../../src/users/service';
import { newOpenid, testConfig, testPhones } from '../helpers/env';
import { post, userPart, loginBody } from '../helpers/http';
import { TestRedisServer } from '../helpers/redis-server';
import { startService, type TestService } from '../helpers/service';
import { testDb, testKeys, testRedis, watchUserSelects } from '../helpers/stores';
import { eventually } from '../helpers/wait';

async function expectNoSuchUser(call: Promise<unknown>): Promise<void> {
  const err = await call.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).to.be.instanceOf(ServiceError);
  expect((err as ServiceError).kind).to.equal('notFound');
}

function profile(openid: string, nick = 'before') {
  return loginBody(openid, { nick_name: nick, phone: '100' });
}

describe('profile cache', () => {
  let svc: TestService;
  let db: Knex;
  let redis: Redis;
  const keys = testKeys();

  before(async () => {
    svc = await startService();
    db = testDb();
    redis = testRedis();
  });
  after(async () => {
    redis.disconnect();
    await db.destroy();
    await svc.stop();
  });

  it('serves a row changed behind its back from the cache until update or logout', async () => {
    const openid = newOpenid();
    await svc.call('login', profile(openid));
    await db('users').where({ openid }).update({ nick_name: 'changed in MySQL' });

    expect((await svc.call('loginByOpenid', { openid })).body.data.nick_name).to.equal('before');
    expect((await svc.call('get', { openid })).body.data.nick_name).to.equal('before');

    await svc.call('logout', { openid });
    expect((await svc.call('get', { openid })).body.data.nick_name).to.equal('changed in MySQL');

    await db('users').where({ openid }).update({ phone: '555' });
    expect((await svc.call('get', { openid })).body.data.phone).to.equal('100');
    const { user_id } = (await svc.call('get', { openid })).body.data;
    await svc.call('update', { user_id, update: { gender: 0 } });
    const fresh = (await svc.call('get', { openid })).body.data;
    expect(fresh).to.include({ phone: '555', gender: 0 });
  });

  it('stores the served JSON under the documented key, and logout removes it', async () => {
    const openid = newOpenid();
    const login = await svc.call('login', profile(openid));
    const key = keys.profile(openid);
    expect(key).to.equal(`${testConfig().redis.keyPrefix}user:{${openid}}:profile`);
    // The served JSON but its phone, which is cached as stored: sealed (phone-encryption.test.ts).
    const cached = JSON.parse((await redis.hget(key, 'user'))!) as { phone: string };
    expect(testPhones().open(cached.phone, openid)).to.equal(login.body.data.phone);
    expect({ ...cached, phone: login.body.data.phone }).to.deep.equal(userPart(login.body.data));
    expect(await redis.pttl(key)).to.be.greaterThan(0);

    await svc.call('logout', { openid });
    expect(await redis.hget(key, 'user')).to.equal(null);
    await svc.call('loginByOpenid', { openid });
    expect(await redis.hget(key, 'user')).to.not.equal(null);
  });

  it('keeps a profile as {v, user} only: the session takes the user_id and unionid from the JSON', async () => {
    const openid = newOpenid();
    const login = await svc.call('login', profile(openid));
    const key = keys.profile(openid);
    // As a process of the layout before left it: a fill drops the copies.
    await redis.hset(key, 'id', '1', 'u', '"stale"');
    await redis.hdel(key, 'user');
    const again = await svc.call('loginByOpenid', { openid });
    expect(Object.keys(await redis.hgetall(key)).sort()).to.deep.equal(['user', 'v']);
    // A hit: the session the login script stored names the user from the cached JSON.
    const hit = await svc.call('loginByOpenid', { openid });
    for (const { token } of [again.body.data, hit.body.data]) {
      const session = JSON.parse((await redis.get(keys.session(token)))!) as { user_id: number; unionid: unknown };
      expect(session).to.include({ user_id: login.body.data.user_id, unionid: null });
    }
    // A cached JSON of another shape is a miss: answered from MySQL, never half-read.
    await redis.hset(key, 'user', '{"openid":"x","user_id":1}');
    expect((await svc.call('get', { openid })).body.data.user_id).to.equal(login.body.data.user_id);
    const relogin = await svc.call('loginByOpenid', { openid });
    expect(relogin.body.data.user_id).to.equal(login.body.data.user_id);
  });

  it('leaves a short-lived tombstone after an update, and caches the new row on the next read', async () => {
    const openid = newOpenid();
    const { user_id } = (await svc.call('login', profile(openid))).body.data;
    const key = keys.profile(openid);
    expect(await redis.pttl(key)).to.be.greaterThan(3_600_000); // a cached profile: CACHE_TTL_SECONDS
    expect((await svc.call('update', { user_id, update: { phone: '200' } })).body.code).to.equal(0);
    expect(await redis.hget(key, 'user')).to.equal(null);
    expect(await redis.hget(key, 'v')).to.equal('2');
    expect(await redis.pttl(key)).to.be.within(1, 60_000); // max(60 s, 2 x DB_QUERY_TIMEOUT_MS)
    expect((await svc.call('get', { openid })).body.data.phone).to.equal('200');
    expect(testPhones().open(JSON.parse((await redis.hget(key, 'user'))!).phone, openid)).to.equal('200');
    expect(await redis.pttl(key)).to.be.greaterThan(3_600_000);
  });

  it('remembers for a few seconds that an openid has no user; a registration elsewhere ends that at once', async () => {
    const openid = newOpenid();
    const key = keys.profile(openid);
    expect((await svc.call('loginByOpenid', { openid })).body.code).to.equal(-2);
    expect(await redis.hgetall(key)).to.deep.equal({ absent: '1' });
    expect(await redis.pttl(key)).to.be.within(1, 5000); // CACHE_ABSENT_TTL_MS
    expect((await svc.call('get', { openid })).body.code).to.equal(-4); // get's "no such user"

    // Registered by another process: its fill replaces the entry, so this one sees the user.
    const other = await createServices(testConfig(), createLogger('silent'));
    try {
      await other.users.register(openid, profile(openid, 'registered elsewhere'));
    } finally {
      await other.close();
    }
    const login = await svc.call('loginByOpenid', { openid });
    expect(login.body.code).to.equal(0);
    expect(login.body.data.nick_name).to.equal('registered elsewhere');
    expect(await redis.hget(key, 'absent')).to.equal(null);
    expect(await redis.pttl(key)).to.be.greaterThan(3_600_000);
  });

  it('ignores "absent" beside a version: a profile an older process filled over it, then logged out', async () => {
    const openid = newOpenid();
    const login = await svc.call('login', profile(openid, 'kept'));
    const key = keys.profile(openid);
    // As a process without "no such user" leaves it: its fill kept the field, logout keeps `v`.
    const leftBehind = async () => {
      await redis.hset(key, 'absent', '1');
      await redis.hdel(key, 'user', 'id', 'u');
      expect(Object.keys(await redis.hgetall(key)).sort()).to.deep.equal(['absent', 'v']);
    };
    await leftBehind();
    expect((await svc.call('get', { openid })).body.data.nick_name).to.equal('kept');
    await leftBehind();
    const again = await svc.call('loginByOpenid', { openid });
    expect(again.body.code).to.equal(0);
    expect(again.body.data.user_id).to.equal(login.body.data.user_id);
    // Logout takes the field away with the profile.
    await redis.hset(key, 'absent', '1');
    await svc.call('logout', { openid });
    expect(await redis.hget(key, 'absent')).to.equal(null);
  });

  it('sees a user inserted into MySQL behind its back once "no such user" has expired', async () => {
    const services = await createServices(testConfig({ CACHE_ABSENT_TTL_MS: 300 }), createLogger('silent'));
    const selects = watchUserSelects(services.db).sql;
    try {
      const openid = newOpenid();
      await expectNoSuchUser(services.users.get(openid));
      await db('users').insert({ openid, nick_name: 'imported', avatar: 'https://e.com/a', gender: 1, phone: '1' });
      await expectNoSuchUser(services.users.get(openid)); // answered by Redis
      expect(selects.length).to.equal(1);
      await eventually(async () => (await redis.exists(keys.profile(openid))) === 0, 5000, 50);
      expect(JSON.parse(await services.users.get(openid)).nick_name).to.equal('imported');
      expect(selects.length).to.equal(2);
    } finally {
      await services.close();
    }
  });

  it('never serves an older profile after an update answered 0, under concurrent readers', async function () {
    this.timeout(60_000);
    const openid = newOpenid();
    const { user_id } = (await svc.call('login', profile(openid, 'v0'))).body.data;
    let acked = 0;
    let stop = false;
    const violations: string[] = [];

    // Readers keep missing (logout drops the cached profile) and refilling from MySQL while
    // the writer moves the nickname through v1..v30; a read that starts after vN was
    // acknowledged must never see anything older.
    const reader = async () => {
      while (!stop) {
        const floor = acked;
        const res = await svc.call('get', { openid });
        const seen = Number(String(res.body.data?.nick_name).slice(1));
        if (res.body.code !== 0 || seen < floor) violations.push(`saw ${res.body.data?.nick_name} after v${floor}`);
      }
    };
    const dropper = async () => {
      while (!stop) await svc.call('logout', { openid });
    };
    const readers = [...Array.from({ length: 8 }, reader), dropper()];
    for (let v = 1; v <= 30; v++) {
      const res = await svc.call('update', { user_id, update: { nick_name: `v${v}` } });
      expect(res.body.code).to.equal(0);
      acked = v;
    }
    stop = true;
    await Promise.all(readers);
    expect(violations).to.deep.equal([]);
    expect((await svc.call('get', { openid })).body.data.nick_name).to.equal('v30');
  });

  describe('the fill race, step by step', () => {
    const opened: Services[] = [];
    after(async () => {
      for (const s of opened) await s.close();
    });

    async function servicesWith(repository: ServiceOverrides['repository']): Promise<UserService> {
      const services = await createServices(testConfig(), createLogger('silent'), { repository });
      opened.push(services);
      return services.users;
    }

    /**
     * A user (nick_name 'old', not cached; or, unless `registered`, an openid without one) and
     * a service whose next MySQL read can be held
     * after MySQL answered it: its caller then holds the row as it was, while the test goes on
     * (updates, other reads, which run freely).
     */
    async function withAHeldRead({ registered = true } = {}) {
      let hold: Promise<void> | null = null;
      let release: () => void = () => {};
      let readDone: () => void = () => {};
      class SlowReads extends UserRepository {
        override async findByOpenid(openid: string): Promise<UserRow[]> {
          const rows = await super.findByOpenid(openid);
          const held = hold;
          if (held) {
            hold = null;
            readDone();
            await held;
          }
          return rows;
        }
      }
      const users = await servicesWith((k, t, p) => new SlowReads(k, t, p));
      const openid = newOpenid();
      let userId = 0;
      if (registered) {
        userId = (await users.register(openid, profile(openid, 'old'))).user_id;
        await users.logout(openid); // cold cache
      }
      return {
        users,
        openid,
        userId,
        /** Holds the next read; resolves once MySQL has answered it. */
        holdNextRead(): Promise<void> {
          hold = new Promise<void>((r) => (release = r));
          return new Promise<void>((r) => (readDone = r));
        },
        release: () => release(),
      };
    }

    it('refuses to cache a row read before an update that was then acknowledged', async () => {
      // The reader gets the old row, then the update commits and is acknowledged, then the
      // reader tries to fill.
      const { users, openid, userId, holdNextRead, release } = await withAHeldRead();

      const readHappened = holdNextRead();
      const staleRead = users.get(openid);
      await readHappened; // the reader holds the old row
      await users.update(userId, { nick_name: 'new' }); // acknowledged
      release();
      expect(JSON.parse(await staleRead).nick_name).to.equal('old'); // it began before the update

      expect(JSON.parse(await users.get(openid)).nick_name).to.equal('new');
      const cached = await redis.hget(keys.profile(openid), 'user');
      if (cached !== null) expect(JSON.parse(cached).nick_name).to.equal('new');
    });

    it('does not share a read begun before an acknowledged update with a caller that came after it', async () => {
      const { users, openid, userId, holdNextRead, release } = await withAHeldRead();

      const readHappened = holdNextRead();
      const early = users.loginByOpenid(openid);
      await readHappened; // its read, shared with whoever misses meanwhile, holds the old row
      await users.update(userId, { nick_name: 'new' }); // acknowledged
      const late = users.loginByOpenid(openid); // misses too, while that read is still held
      expect(JSON.parse(await late).nick_name).to.equal('new');
      release();
      expect(JSON.parse(await early).nick_name).to.equal('old'); // it began before the update
    });

    it('does not record "no such user" over the profile of a registration that came after the read', async () => {
      const { users, openid, holdNextRead, release } = await withAHeldRead({ registered: false });
      const key = keys.profile(openid);

      const readHappened = holdNextRead();
      const early = users.loginByOpenid(openid);
      await readHappened; // MySQL has answered "no such user"
      await users.register(openid, profile(openid, 'new')); // acknowledged, and cached
      release();
      await expectNoSuchUser(early); // it began before the registration
      await users.get(openid); // after the early reader's Redis commands, on the same connection
      expect(await redis.hget(key, 'absent')).to.equal(null);
      expect(await redis.pttl(key)).to.be.greaterThan(3_600_000); // still the profile's lifetime
      expect(JSON.parse(await users.loginByOpenid(openid)).nick_name).to.equal('new');
    });

    it('does not share a "no such user" read with a caller that came after a registration', async () => {
      const { users, openid, holdNextRead, release } = await withAHeldRead({ registered: false });

      const readHappened = holdNextRead();
      const early = expectNoSuchUser(users.loginByOpenid(openid)); // it began before the registration
      await readHappened;
      await users.register(openid, profile(openid, 'new')); // acknowledged
      // As if the registration's fill had not landed (evicted, or Redis failed it): the late
      // caller misses in Redis while the early read is still held.
      await redis.del(keys.profile(openid));
      const late = users.loginByOpenid(openid);
      release();
      expect(JSON.parse(await late).nick_name).to.equal('new');
      await early;
    });

    it('reaches MySQL a handful of times for 1,000 concurrent loginByOpenid of one cold openid', async function () {
      this.timeout(60_000);
      const config = testConfig();
      const services = await createServices(config, createLogger('silent'));
      opened.push(services);
      const selects = watchUserSelects(services.db).sql;
      const server = createApp(config, services, createLogger('silent')).listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      try {
        const openid = newOpenid();
        await svc.call('login', profile(openid));
        await svc.call('logout', { openid }); // cold: no cached profile
        selects.length = 0;
        const answers = await Promise.all(Array.from({ length: 1000 }, () => post(url, 'loginByOpenid', { openid })));
        for (const a of answers) expect(a.body.code).to.equal(0);
        expect(new Set(answers.map((a) => a.body.data.token)).size).to.equal(1000);
        expect(selects.length).to.be.within(1, 3);

        selects.length = 0;
        const missing = newOpenid('missing');
        const misses = await Promise.all(
          Array.from({ length: 200 }, () => post(url, 'loginByOpenid', { openid: missing })),
        );
        for (const m of misses) expect(m.body.code).to.equal(-2);
        expect(selects.length).to.be.within(1, 3);

        // ...and none for the next ones: Redis says "no such user" for a few seconds.
        selects.length = 0;
        const again = await Promise.all(
          Array.from({ length: 50 }, () => post(url, 'loginByOpenid', { openid: missing })),
        );
        for (const m of again) expect(m.body.code).to.equal(-2);
        expect(selects.length).to.equal(0);
      } finally {
        await new Promise((r) => server.close(r));
      }
    });
  });
});

describe('Redis round trips of loginByOpenid (a redis-server owned by this test)', function () {
  this.timeout(60_000);
  let redisServer: TestRedisServer;
  let svc: TestService;
  let monitor: IORedis;

  before(async () => {
    redisServer = await TestRedisServer.start();
    // A single node of its own, also when the suite reruns against a cluster.
    svc = await startService({ REDIS_URL: redisServer.url, REDIS_CLUSTER_NODES: '' });
  });
  after(async () => {
    monitor?.disconnect();
    await svc.stop();
    await redisServer.kill();
  });

  /** The commands the service sends (not those its scripts run) while `work` runs. */
  async function commandsDuring(work: () => Promise<unknown>): Promise<string[]> {
    // monitor() opens a connection of its own; the client it came from is not needed.
    const client = new IORedis(redisServer.url);
    monitor = await client.monitor();
    client.disconnect();
    const seen: { name: string; source: string }[] = [];
    monitor.on('monitor', (_time: string, args: string[], source: string) =>
      seen.push({ name: String(args[0]).toLowerCase(), source }),
    );
    await new Promise((r) => setTimeout(r, 50));
    await work();
    await new Promise((r) => setTimeout(r, 100));
    monitor.disconnect();
    return seen.filter((c) => c.source !== 'lua').map((c) => c.name);
  }

  it('is one command on a cache hit: the login script reads the profile and stores the session', async () => {
    const openid = newOpenid();
    await svc.call('login', profile(openid));
    await svc.call('loginByOpenid', { openid }); // cached now, scripts loaded
    const tokens: string[] = [];
    const sent = await commandsDuring(async () => {
      for (let i = 0; i < 5; i++) tokens.push((await svc.call('loginByOpenid', { openid })).body.data.token);
    });
    expect(sent).to.deep.equal(Array(5).fill('evalsha'));
    // ...and the sessions it stored are live and belong to the user.
    for (const token of tokens) {
      const session = await svc.call('session', { token });
      expect(session.body.code).to.equal(0);
      expect(session.body.data.openid).to.equal(openid);
    }
  });

  it('is two for an openid without a user (the script, then "no such user"), then one', async () => {
    const openid = newOpenid();
    await svc.call('loginByOpenid', { openid: newOpenid() }); // scripts loaded
    let code = 0;
    const sent = await commandsDuring(async () => {
      code = (await svc.call('loginByOpenid', { openid })).body.code;
    });
    expect(code).to.equal(-2);
    expect(sent).to.deep.equal(['evalsha', 'evalsha']);
    const next = await commandsDuring(async () => {
      code = (await svc.call('loginByOpenid', { openid })).body.code;
    });
    expect(code).to.equal(-2);
    expect(next).to.deep.equal(['evalsha']);
  });

  it('is two on a miss: the login script (which stores nothing), then the fill with the session', async () => {
    const openid = newOpenid();
    await svc.call('login', profile(openid));
    await svc.call('logout', { openid }); // no profile cached
    let token = '';
    const sent = await commandsDuring(async () => {
      token = (await svc.call('loginByOpenid', { openid })).body.data.token;
    });
    expect(sent).to.deep.equal(['evalsha', 'evalsha']);
    expect((await svc.call('session', { token })).body.data.openid).to.equal(openid);
    // The miss cached the profile: the next call is a hit.
    expect(await commandsDuring(() => svc.call('loginByOpenid', { openid }))).to.deep.equal(['evalsha']);
  });
});
