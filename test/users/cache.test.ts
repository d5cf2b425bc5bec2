import { expect } from 'chai';
import type { Knex } from 'knex';
import type Redis from 'ioredis';
import { ServiceError } from '../../src/errors';
import { createLogger } from '../../src/logger';
import { createServices, type ServiceOverrides, type Services } from '../../src/services';
import type { UserRow } from '../../src/users/model';
import { UserRepository } from '../../src/users/repository';
import type { UserService } from '../../src/users/service';
import { newOpenid, testConfig } from '../helpers/env';
import { userPart } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { testDb, testKeys, testRedis } from '../helpers/stores';

function profile(openid: string, nick = 'before') {
  return { openid, nick_name: nick, avatar: 'https://example.com/a.png', gender: 1, phone: '100' };
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
    expect(JSON.parse((await redis.hget(key, 'user'))!)).to.deep.equal(userPart(login.body.data));
    expect(await redis.pttl(key)).to.be.greaterThan(0);

    await svc.call('logout', { openid });
    expect(await redis.hget(key, 'user')).to.equal(null);
    await svc.call('loginByOpenid', { openid });
    expect(await redis.hget(key, 'user')).to.not.equal(null);
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

    it('refuses to cache a row read before an update that was then acknowledged', async () => {
      // A repository whose reads can be held after MySQL answered: the reader gets the old
      // row, then the update commits and is acknowledged, then the reader tries to fill.
      let hold: Promise<void> | null = null;
      let release: () => void = () => {};
      let readDone: () => void = () => {};
      const readHappened = new Promise<void>((r) => (readDone = r));
      class SlowReads extends UserRepository {
        override async findByOpenid(openid: string): Promise<UserRow[]> {
          const rows = await super.findByOpenid(openid);
          if (hold) {
            readDone();
            await hold;
          }
          return rows;
        }
      }
      const users = await servicesWith((k, t) => new SlowReads(k, t));

      const openid = newOpenid();
      const user = await users.register(openid, profile(openid, 'old'));
      await users.logout(openid); // cold cache

      hold = new Promise<void>((r) => (release = r));
      const staleRead = users.get(openid);
      await readHappened; // the reader holds the old row
      hold = null;
      await users.update(user.user_id, { nick_name: 'new' }); // acknowledged
      release();
      expect(JSON.parse(await staleRead).nick_name).to.equal('old'); // it began before the update

      expect(JSON.parse(await users.get(openid)).nick_name).to.equal('new');
      const cached = await redis.hget(keys.profile(openid), 'user');
      if (cached !== null) expect(JSON.parse(cached).nick_name).to.equal('new');
    });

    it('makes one MySQL read for many concurrent misses of one openid', async () => {
      let reads = 0;
      class Counting extends UserRepository {
        override async findByOpenid(openid: string): Promise<UserRow[]> {
          reads++;
          return super.findByOpenid(openid);
        }
      }
      const users = await servicesWith((k, t) => new Counting(k, t));
      const openid = newOpenid();
      await svc.call('login', profile(openid));
      await svc.call('logout', { openid });
      const answers = await Promise.all(Array.from({ length: 200 }, () => users.get(openid)));
      expect(new Set(answers).size).to.equal(1);
      expect(reads).to.be.at.most(2);

      reads = 0;
      const missing = newOpenid('missing');
      const misses = await Promise.allSettled(Array.from({ length: 50 }, () => users.get(missing)));
      for (const m of misses) {
        expect(m.status).to.equal('rejected');
        expect((m as PromiseRejectedResult).reason).to.be.instanceOf(ServiceError);
      }
      expect(reads).to.be.at.most(2);
    });
  });
});
