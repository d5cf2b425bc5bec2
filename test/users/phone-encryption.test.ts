import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Knex } from '../../src/db/knex';
import { createLogger } from '../../src/logger';
import type { RedisClient } from '../../src/redis/client';
import { createServices } from '../../src/services';
import { newOpenid, testConfig, testPhones } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { loginBody } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';
import { testDb, testKeys, testRedis } from '../helpers/stores';

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
/** A number no other test uses: found in a dump only if this test's own phone leaked. */
const newPhone = () => `1${String(Math.floor(Math.random() * 1e10)).padStart(10, '0')}`;

/** Every value stored under a key prefix, as text: strings, hash fields and values, members. */
export async function redisValuesUnder(redis: RedisClient, prefix: string): Promise<string[]> {
  const values: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    for (const key of keys) {
      const type = await redis.type(key);
      if (type === 'string') values.push((await redis.get(key)) ?? '');
      else if (type === 'hash') values.push(...Object.entries(await redis.hgetall(key)).flat());
      else if (type === 'zset') values.push(...(await redis.zrange(key, 0, -1)));
      else if (type === 'set') values.push(...(await redis.smembers(key)));
      else if (type === 'list') values.push(...(await redis.lrange(key, 0, -1)));
      values.push(key);
    }
  } while (cursor !== '0');
  return values;
}

describe('phone numbers encrypted at rest (users.phone and the cached profiles)', function () {
  this.timeout(30_000);
  let wechat: FakeWechat;
  let svc: TestService;
  let db: Knex;
  let redis: RedisClient;
  const logs = new LogCapture();
  const keys = testKeys();
  const phones = testPhones();

  before(async () => {
    wechat = await new FakeWechat().start();
    db = testDb();
    redis = testRedis();
    svc = await startService(
      {
        WECHAT_API_BASE: wechat.url,
        WECHAT_APPID: `wx-enc-${randomBytes(3).toString('hex')}`,
        WECHAT_SECRET: 'phone-encryption-secret',
        WECHAT_TIMEOUT_MS: 5000,
        LOG_LEVEL: 'trace',
      },
      logs,
    );
  });
  after(async () => {
    redis.disconnect();
    await db.destroy();
    await svc.stop();
    await wechat.stop();
  });

  it('keeps every number out of MySQL and Redis after logins, updates and a bindPhone, while the API (and the export) answers them', async () => {
    const used: string[] = [];
    const users: { openid: string; token: string; user_id: number; phone: string }[] = [];
    for (let i = 0; i < 4; i++) {
      const openid = newOpenid('enc');
      const phone = newPhone();
      used.push(phone);
      const login = await svc.call('login', loginBody(openid, { phone }));
      expect(login.body.data.phone).to.equal(phone);
      users.push({ openid, token: login.body.data.token, user_id: login.body.data.user_id, phone });
    }
    const [a, b, c, d] = users as [
      (typeof users)[number],
      (typeof users)[number],
      (typeof users)[number],
      (typeof users)[number],
    ];
    // An update, an update in a form (the string shortcut), a bindPhone; d keeps its login phone.
    a.phone = newPhone();
    expect((await svc.call('update', { user_id: a.user_id, update: { phone: a.phone } })).body.code).to.equal(0);
    b.phone = newPhone();
    const form = { user_id: String(b.user_id), update: JSON.stringify({ phone: b.phone, nick_name: 'b' }) };
    expect((await svc.call('update', form, { form: true })).body.code).to.equal(0);
    c.phone = newPhone();
    const code = `phone-code-${randomBytes(6).toString('hex')}`;
    wechat.phoneCode(code, c.phone);
    const bound = await svc.call('bindPhone', { code }, bearer(c.token));
    expect(bound.body.data.phone).to.equal(c.phone);
    used.push(a.phone, b.phone, c.phone);

    // Every reader answers the number in the clear: from MySQL, then from the cache.
    for (const u of users) {
      expect((await svc.call('get', { openid: u.openid })).body.data.phone, 'get').to.equal(u.phone);
      expect((await svc.call('get', { openid: u.openid })).body.data.phone, 'get, cached').to.equal(u.phone);
      const login = await svc.call('loginByOpenid', { openid: u.openid });
      expect(login.body.data.phone, 'loginByOpenid').to.equal(u.phone);
      expect((await svc.call('session', { token: login.body.data.token })).body.data.phone).to.equal(u.phone);
      const exported = await svc.call('exportData', {}, bearer(login.body.data.token));
      expect(exported.body.data.user.phone, 'exportData').to.equal(u.phone);
      expect((await svc.call('login', loginBody(u.openid, { phone: 'ignored' }))).body.data.phone).to.equal(u.phone);
    }
    await svc.call('logout', { openid: d.openid });
    expect((await svc.call('loginByOpenid', { openid: d.openid })).body.data.phone, 'a miss').to.equal(d.phone);

    const stored = (await db('users')
      .whereIn(
        'openid',
        users.map((u) => u.openid),
      )
      .select('openid', 'phone')) as {
      openid: string;
      phone: string;
    }[];
    expect(stored).to.have.length(4);
    const column = (await db.raw('SELECT phone FROM users')) as [{ phone: string }[]];
    const dump = column[0].map((r) => r.phone).join('\n');
    const cached = (await redisValuesUnder(redis, testConfig().redis.keyPrefix)).join('\n');
    for (const phone of used) {
      expect(dump, 'SELECT phone FROM users').to.not.include(phone);
      expect(cached, 'a Redis value').to.not.include(phone);
    }
    for (const u of users) {
      const row = stored.find((r) => r.openid === u.openid)!;
      expect(row.phone).to.match(/^v1\.test\./);
      expect(phones.open(row.phone, u.openid)).to.equal(u.phone);
      // The cached profile holds the ciphertext.
      const profile = JSON.parse((await redis.hget(keys.profile(u.openid), 'user'))!) as { phone: string };
      expect(phones.open(profile.phone, u.openid)).to.equal(u.phone);
    }
    for (const phone of used) expect(logs.text, 'the log').to.not.include(phone);
  });

  it("answers an error, and never the other user's number, for a value copied from another row", async () => {
    const one = { openid: newOpenid('swap'), phone: newPhone() };
    const two = { openid: newOpenid('swap'), phone: newPhone() };
    for (const u of [one, two])
      expect((await svc.call('login', loginBody(u.openid, { phone: u.phone }))).body.code).to.equal(0);
    const sealed = async (openid: string) =>
      ((await db('users').where({ openid }).first('phone')) as { phone: string }).phone;
    const [s1, s2] = [await sealed(one.openid), await sealed(two.openid)];
    // Swapped in MySQL (a database-only attacker, or a bad restore), caches dropped.
    await db('users').where({ openid: one.openid }).update({ phone: s2 });
    await db('users').where({ openid: two.openid }).update({ phone: s1 });
    for (const u of [one, two]) await svc.call('logout', { openid: u.openid });
    const before = logs.lines.length;

    for (const [u, other] of [
      [one, two],
      [two, one],
    ] as const) {
      const got = await svc.call('get', { openid: u.openid });
      expect(got.body.code, 'get: other error').to.equal(-3);
      const login = await svc.call('loginByOpenid', { openid: u.openid });
      expect(login.body.code, 'loginByOpenid: other error').to.equal(-2);
      const again = await svc.call('login', loginBody(u.openid));
      expect(again.body.code, 'login: other error').to.equal(-2);
      for (const text of [got.text, login.text, again.text]) {
        expect(text).to.not.include(other.phone).and.not.include(u.phone);
      }
    }
    const errors = logs.lines
      .slice(before)
      .map((l) => JSON.parse(l) as { level: number; msg: string; userId?: number; keyId?: string; reason?: string })
      .filter((l) => l.msg === 'stored phone cannot be decrypted for its row');
    expect(errors.length).to.be.at.least(2);
    expect(errors[0]).to.include({ level: 50, keyId: 'test', reason: 'not this row' });
    expect(errors[0]!.userId).to.be.a('number');

    // The same for a value swapped in the cache, on the hot path (one Redis round trip).
    await db('users').where({ openid: one.openid }).update({ phone: s1 });
    await db('users').where({ openid: two.openid }).update({ phone: s2 });
    for (const u of [one, two]) expect((await svc.call('get', { openid: u.openid })).body.data.phone).to.equal(u.phone);
    const key = keys.profile(one.openid);
    const json = (await redis.hget(key, 'user'))!;
    await redis.hset(key, 'user', json.replace(s1, s2));
    const mark = logs.lines.length;
    const hot = await svc.call('loginByOpenid', { openid: one.openid });
    expect(hot.body.code).to.equal(-2);
    expect(hot.text).to.not.include(two.phone);
    const last = logs.lines
      .slice(mark)
      .map((l) => JSON.parse(l) as { msg: string; userId: number })
      .find((l) => l.msg === 'stored phone cannot be decrypted for its row');
    expect((await svc.call('get', { openid: one.openid })).body.code).to.equal(-3);
    expect(last!.userId, 'the hot path names the row too').to.equal(
      (await db('users').where({ openid: one.openid }).first('id')).id,
    );
  });

  it("reads a plain-text phone from before encryption, never writes one, and keeps '' as ''", async () => {
    const openid = newOpenid('plain');
    const phone = newPhone();
    await db('users').insert({ openid, nick_name: 'old', avatar: 'https://e.com/a', gender: 1, phone });
    expect((await svc.call('loginByOpenid', { openid })).body.data.phone).to.equal(phone);
    const { user_id } = (await svc.call('get', { openid })).body.data;
    // An update that does not name the phone leaves it for `npm run rekey`; one that does seals it.
    await svc.call('update', { user_id, update: { nick_name: 'new' } });
    expect((await db('users').where({ openid }).first('phone')).phone).to.equal(phone);
    const next = newPhone();
    await svc.call('update', { user_id, update: { phone: next } });
    expect((await db('users').where({ openid }).first('phone')).phone).to.match(/^v1\.test\./);
    expect((await svc.call('get', { openid })).body.data.phone).to.equal(next);

    // '' (a phone cleared, as WeChat's user-info push does through UserService.update) stays ''.
    const services = await createServices(testConfig(), createLogger('silent'));
    try {
      await services.users.update(user_id, { phone: '' });
    } finally {
      await services.close();
    }
    expect((await db('users').where({ openid }).first('phone')).phone).to.equal('');
    expect((await svc.call('get', { openid })).body.data.phone).to.equal('');
    expect((await svc.call('loginByOpenid', { openid })).body.data.phone).to.equal('');
  });

  it('starts with the development key and a warn line outside production when PHONE_KEYS is unset', async () => {
    const devLogs = new LogCapture();
    const dev = await startService({ PHONE_KEYS: '', LOG_LEVEL: 'warn' }, devLogs);
    try {
      const warn = devLogs.lines
        .map((l) => JSON.parse(l) as { level: number; msg: string })
        .find((l) => /PHONE_KEYS/.test(l.msg));
      expect(warn).to.include({ level: 40 });
      const openid = newOpenid('dev');
      expect((await dev.call('login', loginBody(openid, { phone: '13800000000' }))).body.code).to.equal(0);
      expect((await db('users').where({ openid }).first('phone')).phone).to.match(/^v1\.dev\./);
    } finally {
      await dev.stop();
    }
  });
});
