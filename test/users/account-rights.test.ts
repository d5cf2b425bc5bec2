import { expect } from 'chai';
import type { Knex } from 'knex';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { readSession } from 'wechat-user-sessions';
import type { RedisClient } from '../../src/redis/client';
import { ServiceError } from '../../src/errors';
import { createLogger } from '../../src/logger';
import { createServices, type Services } from '../../src/services';
import type { UserRow } from '../../src/users/model';
import { UserRepository } from '../../src/users/repository';
import { exportOutput } from '../../src/users/schemas';
import { newOpenid, testConfig } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { loginBody } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { testDb, testRedis } from '../helpers/stores';

const PUBLIC_BASE_URL = 'https://cdn.example.test';

/** Every key of the run's prefix, on every node. */
async function keysMatching(redis: RedisClient, prefix: string, needle: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await (redis as import('ioredis').Redis).scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    found.push(...keys.filter((k) => k.includes(needle)));
  } while (cursor !== '0');
  return found;
}

describe('deleteAccount and exportData (the user rights of PIPL art. 45 and 47)', function () {
  this.timeout(30_000);
  let svc: TestService;
  let wechat: FakeWechat;
  let db: Knex;
  let redis: RedisClient;
  const prefix = testConfig().redis.keyPrefix;
  const mediaDir = testConfig().media.dir;
  let codes = 0;

  /** A fresh wx.login code of `openid`, good once (as WeChat's are). */
  function jsCode(openid: string): string {
    codes += 1;
    const code = `del-code-${codes}`;
    wechat.on(
      code,
      { body: { openid, session_key: `sk-${codes}` } },
      { body: { errcode: 40163, errmsg: 'code been used' } },
    );
    return code;
  }

  async function registered(fields = {}): Promise<{ openid: string; token: string; user_id: number }> {
    const openid = newOpenid('del');
    const login = await svc.call('login', loginBody(openid, { phone: '13912345678', ...fields }));
    expect(login.body.code, login.body.msg).to.equal(0);
    return { openid, token: login.body.data.token, user_id: login.body.data.user_id };
  }

  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
  const avatarFiles = (userId: number) =>
    existsSync(join(mediaDir, 'avatar'))
      ? readdirSync(join(mediaDir, 'avatar')).filter((f) => f.startsWith(`${userId}_`))
      : [];

  async function uploadAvatar(token: string): Promise<string> {
    const image = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#c33' } })
      .jpeg()
      .toBuffer();
    const form = new FormData();
    form.append('file', new Blob([image], { type: 'image/jpeg' }), 'a.jpg');
    const res = await fetch(`${svc.url}/service/user/avatar`, {
      method: 'POST',
      body: form,
      headers: { authorization: `Bearer ${token}` },
    });
    const body = (await res.json()) as { code: number; data: { avatar: string } };
    expect(body.code).to.equal(0);
    return body.data.avatar;
  }

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await startService({
      WECHAT_API_BASE: wechat.url,
      WECHAT_APPID: 'wx-test',
      WECHAT_SECRET: 's',
      PUBLIC_BASE_URL,
    });
    db = testDb();
    redis = testRedis();
  });
  after(async () => {
    await svc.stop();
    await wechat.stop();
    await db.destroy();
    redis.disconnect();
  });

  it('deletes everything: sessions dead for the sessions package, no row, no key, no avatar file; a new login is a new user', async () => {
    const u = await registered({ nick_name: '删我', avatar: 'https://thirdwx.qlogo.cn/x/132' });
    const second = (await svc.call('loginByOpenid', { openid: u.openid })).body.data.token as string;
    await uploadAvatar(u.token);
    // an older upload of the same user, which the profile no longer names
    await uploadAvatar(u.token);
    expect(avatarFiles(u.user_id).length).to.be.greaterThan(0);
    // the session_key of a getOpenid
    const code = jsCode(u.openid);
    const res = await svc.call('deleteAccount', { js_code: code }, bearer(u.token));
    expect(res.body, res.text).to.deep.equal({ code: 0, msg: 'success', data: null });

    for (const token of [u.token, second]) {
      expect(await readSession(redis, token, { keyPrefix: prefix })).to.equal(null);
    }
    expect(await db('users').where({ openid: u.openid })).to.deep.equal([]);
    expect(await db('users').where({ id: u.user_id })).to.deep.equal([]);
    const [record] = await db('account_deletions').where({ user_id: u.user_id });
    expect(record).to.include({ user_id: u.user_id, reason: 'user' });
    expect(record.deleted_at).to.be.an.instanceOf(Date);
    expect(Object.keys(record).sort()).to.deep.equal(['deleted_at', 'id', 'reason', 'user_id']);
    expect(avatarFiles(u.user_id)).to.deep.equal([]);

    // What may stay in Redis for a minute: the fence (a version, and the user_id it fences off)
    // and the rate-limit counters. Nothing of the profile, no session, no session_key.
    const left = await keysMatching(redis, prefix, u.openid);
    for (const key of left) {
      if (key.includes(':ratelimit:')) continue;
      expect(key).to.equal(`${prefix}user:{${u.openid}}:profile`);
      expect(Object.keys(await redis.hgetall(key)).sort()).to.deep.equal(['gone', 'v']);
      expect(await redis.pttl(key)).to.be.within(1, 120_000);
    }
    // A user_id appears in a key name only as a rate-limit subject (`…|<id>`) or in braces.
    const namesId = new RegExp(`[|{:]${u.user_id}([}:]|$)`);
    const byId = (await keysMatching(redis, prefix, String(u.user_id))).filter(
      (k) => namesId.test(k) && !k.includes(':ratelimit:'),
    );
    expect(byId).to.deep.equal([]);

    expect((await svc.call('get', { openid: u.openid })).body.code).to.equal(-4);
    expect((await svc.call('loginByOpenid', { openid: u.openid })).body.code).to.equal(-2);
    expect((await svc.call('session', { token: u.token })).body.code).to.equal(-10);
    const again = await svc.call('login', loginBody(u.openid));
    expect(again.body.code).to.equal(0);
    expect(again.body.data.user_id).to.not.equal(u.user_id);
    expect(again.body.data.nick_name).to.equal('n');
    // and the new user is readable at once, though the old fence still lives
    expect((await svc.call('get', { openid: u.openid })).body.data.user_id).to.equal(again.body.data.user_id);
    expect((await svc.call('loginByOpenid', { openid: u.openid })).body.data.user_id).to.equal(again.body.data.user_id);
  });

  it("refuses -10, changing nothing, without a token, without a js_code, with a used, foreign or another openid's code", async () => {
    const u = await registered();
    const other = await registered();
    const cases: [string, unknown, object][] = [
      ['no token', { js_code: jsCode(u.openid) }, {}],
      ['a bad token', { js_code: jsCode(u.openid) }, bearer('x'.repeat(32))],
      ['no js_code (a stolen token alone)', {}, bearer(u.token)],
      ['an unknown code', { js_code: 'never-issued' }, bearer(u.token)],
      ["another openid's code", { js_code: jsCode(other.openid) }, bearer(u.token)],
    ];
    // WeChat busy (errcode -1, retried once by the client) is not a refusal of the code: -2
    wechat.on('busy-code', { body: { errcode: -1, errmsg: 'system error' } });
    expect((await svc.call('deleteAccount', { js_code: 'busy-code' }, bearer(u.token))).body.code).to.equal(-2);
    const used = jsCode(u.openid);
    await svc.call('getOpenid', { js_code: used });
    cases.push(['a used code', { js_code: used }, bearer(u.token)]);
    for (const [what, body, opts] of cases) {
      const res = await svc.call('deleteAccount', body, opts);
      expect(res.body.code, what).to.equal(-10);
    }
    expect((await db('users').where({ id: u.user_id })).length).to.equal(1);
    expect(await db('account_deletions').where({ user_id: u.user_id })).to.deep.equal([]);
    expect(await readSession(redis, u.token, { keyPrefix: prefix })).to.not.equal(null);
    expect((await svc.call('get', { openid: u.openid })).body.code).to.equal(0);
  });

  it('is refused in token mode too without the js_code, and works there with both', async () => {
    const strict = await startService({
      WECHAT_API_BASE: wechat.url,
      WECHAT_APPID: 'wx-test',
      WECHAT_SECRET: 's',
      AUTH_MODE: 'token',
    });
    try {
      const openid = newOpenid('dels');
      const code = jsCode(openid);
      const login = await strict.call('login', { ...loginBody(openid), openid: undefined, js_code: code });
      expect(login.body.code, login.body.msg).to.equal(0);
      const token = login.body.data.token as string;
      expect((await strict.call('deleteAccount', {}, bearer(token))).body.code).to.equal(-10);
      expect((await strict.call('deleteAccount', { js_code: jsCode(openid), token })).body.code).to.equal(0);
      expect((await db('users').where({ openid })).length).to.equal(0);
    } finally {
      await strict.stop();
    }
  });

  it('exports the profile with the full phone, the live sessions and whether a session_key is held; no token, no key', async () => {
    const u = await registered({ phone: '13800138000' });
    const second = (await svc.call('loginByOpenid', { openid: u.openid })).body.data.token as string;
    const code = jsCode(u.openid);
    expect((await svc.call('getOpenid', { js_code: code })).body.code).to.equal(0);
    const res = await svc.call('exportData', {}, bearer(u.token));
    expect(res.body.code, res.body.msg).to.equal(0);
    const data = res.body.data;
    expect(exportOutput.validate(data, { convert: false }).error).to.equal(undefined);
    expect(data.user).to.include({ user_id: u.user_id, openid: u.openid, phone: '13800138000', unionid: null });
    expect(data.user.ctime).to.match(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(data.sessions).to.have.length(3);
    for (const s of data.sessions)
      expect(Object.keys(s).sort()).to.deep.equal(['expires_at', 'idle_timeout', 'issued_at']);
    expect(data.session_key_held).to.equal(true);
    expect(data.avatar_stored_here).to.equal(false);
    for (const secret of [u.token, second, `sk-${codes}`]) expect(res.text).to.not.include(secret);

    await svc.call('logout', { openid: u.openid });
    const fresh = (await svc.call('loginByOpenid', { openid: u.openid })).body.data.token as string;
    const after = (await svc.call('exportData', {}, bearer(fresh))).body.data;
    expect(after.sessions).to.have.length(1);
    expect(after.session_key_held).to.equal(false);
    expect((await svc.call('exportData', {})).body.code).to.equal(-10);
  });

  it('rate limits a caller looping exportData with one valid session (429), and deleteAccount at 2 a call', async () => {
    // Its own key prefix: the client budget of 127.0.0.1 is shared by every service of the run.
    const limited = await startService({
      WECHAT_API_BASE: wechat.url,
      RATE_LIMIT_IP: 6,
      RATE_LIMIT_OPENID: 0,
      REDIS_KEY_PREFIX: `${testConfig().redis.keyPrefix}export-rl:`,
    });
    try {
      const openid = newOpenid('rl');
      const token = (await limited.call('login', loginBody(openid))).body.data.token as string;
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) statuses.push((await limited.call('exportData', {}, bearer(token))).status);
      // login took 2 of the 6 (a first login may spend two WeChat content checks): four copies, then 429
      expect(statuses).to.deep.equal([200, 200, 200, 200, 429, 429, 429, 429]);
      const over = await limited.call('deleteAccount', { js_code: jsCode(openid) }, bearer(token));
      expect(over.status).to.equal(429);
      expect((await db('users').where({ openid })).length).to.equal(1);
    } finally {
      await limited.stop();
    }
  });

  it('an update racing a deletion never brings the row or the cached profile back', async () => {
    for (let round = 0; round < 8; round++) {
      const u = await registered();
      // warm the cache, so that a stale fill would have something to write back
      await svc.call('get', { openid: u.openid });
      const [del, ...updates] = await Promise.all([
        svc.call('deleteAccount', { js_code: jsCode(u.openid) }, bearer(u.token)),
        ...[0, 1, 2].map((i) => svc.call('update', { user_id: u.user_id, update: { nick_name: `r${round}-${i}` } })),
        svc.call('get', { openid: u.openid }),
        svc.call('loginByOpenid', { openid: u.openid }),
      ]);
      expect(del!.body.code).to.equal(0);
      for (const up of updates.slice(0, 3)) expect([0, -2]).to.include(up.body.code);
      expect(await db('users').where({ openid: u.openid })).to.deep.equal([]);
      const profile = await redis.hgetall(`${prefix}user:{${u.openid}}:profile`);
      expect(profile.user, `round ${round}`).to.equal(undefined);
      expect((await svc.call('get', { openid: u.openid })).body.code).to.equal(-4);
      // a loginByOpenid that read the row before the deletion left no live session behind
      expect(await redis.zcard(`${prefix}user:{${u.openid}}:sessions`)).to.equal(0);
    }
  });

  describe('a read held across the deletion, step by step', () => {
    let services: Services;
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
    /** Holds the next MySQL read after it was answered; resolves once it has been. */
    function holdNextRead(): Promise<void> {
      hold = new Promise<void>((r) => (release = r));
      return new Promise<void>((r) => (readDone = r));
    }

    before(async () => {
      services = await createServices(testConfig({ WECHAT_API_BASE: wechat.url }), createLogger('silent'), {
        repository: (k, t, p) => new SlowReads(k, t, p),
      });
    });
    after(() => services.close());

    async function coldUser(): Promise<{ openid: string; userId: number }> {
      const openid = newOpenid('held');
      const { user_id } = await services.users.register(openid, {
        nick_name: 'n',
        avatar: 'https://e.x/a.png',
        gender: 1,
        phone: '1',
      });
      await services.users.logout(openid);
      return { openid, userId: user_id };
    }

    it('a loginByOpenid that read the row before the deletion stores no session and caches nothing', async () => {
      const { openid } = await coldUser();
      const read = holdNextRead();
      const login = services.users.loginByOpenid(openid).then(
        () => 'answered',
        (err: unknown) => (err instanceof ServiceError ? err.kind : String(err)),
      );
      await read; // it holds the row
      await services.rights.deleteUser(openid, 'user');
      release();
      expect(await login).to.equal('notFound');
      expect(await redis.zcard(`${prefix}user:{${openid}}:sessions`)).to.equal(0);
      expect(await redis.hget(`${prefix}user:{${openid}}:profile`, 'user')).to.equal(null);
    });

    it('a getOpenid that read the user before the deletion issues a session without its user_id', async () => {
      const { openid, userId } = await coldUser();
      const read = holdNextRead();
      const answer = services.users.openidFromCode(jsCode(openid));
      await read;
      await services.rights.deleteUser(openid, 'user');
      release();
      const { token } = await answer;
      const session = await readSession(redis, token, { keyPrefix: prefix });
      expect(session).to.include({ openid, user_id: null });
      expect(userId).to.be.greaterThan(0);
    });

    it('a get that read the row before the deletion cannot cache it', async () => {
      const { openid } = await coldUser();
      const read = holdNextRead();
      const get = services.users.get(openid);
      await read;
      await services.rights.deleteUser(openid, 'user');
      release();
      await get; // it began before the deletion
      // its fill is not awaited by get: give it the time of a round trip, then look
      await services.redis.ping();
      expect(await redis.hget(`${prefix}user:{${openid}}:profile`, 'user')).to.equal(null);
      await expectCode(services.users.get(openid), 'notFound');
    });

    async function expectCode(call: Promise<unknown>, kind: string): Promise<void> {
      try {
        await call;
        expect.fail('answered');
      } catch (err) {
        expect((err as ServiceError).kind).to.equal(kind);
      }
    }
  });
});
