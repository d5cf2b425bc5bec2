import { expect } from 'chai';
import type { RedisClient as Redis } from '../../src/redis/client';
import { newOpenid } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { FakeWechat } from '../helpers/fake-wechat';
import { startService, type TestService } from '../helpers/service';
import { testKeys, testRedis } from '../helpers/stores';

const TOKEN = /^[A-Za-z0-9_-]{32}$/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function profile(openid: string) {
  return loginBody(openid, { nick_name: 'sess', phone: '13800000000' });
}

describe('sessions', function () {
  this.timeout(30_000);
  let svc: TestService;
  let wechat: FakeWechat;
  let redis: Redis;
  const keys = testKeys();

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await startService({ WECHAT_API_BASE: wechat.url });
    redis = testRedis();
  });
  after(async () => {
    redis.disconnect();
    await svc.stop();
    await wechat.stop();
  });

  const sessionOf = (token: string) => svc.call('session', { token });

  it('issues distinct 32-character base64url tokens (174 random bits) on login and loginByOpenid', async () => {
    const openid = newOpenid();
    const login = await svc.call('login', profile(openid));
    const tokens = [login.body.data.token];
    const answers = await Promise.all(Array.from({ length: 199 }, () => svc.call('loginByOpenid', { openid })));
    for (const a of answers) tokens.push(a.body.data.token);

    expect(new Set(tokens).size).to.equal(200);
    for (const t of tokens) {
      expect(t).to.match(TOKEN);
      expect(Buffer.from(t, 'base64url')).to.have.length(24);
    }
    // 200 tokens x 32 characters: every one of the 64 base64url characters shows up.
    expect(new Set(tokens.join('')).size).to.equal(64);

    const now = Date.now() / 1000;
    const expiresAt = login.body.data.token_expires_at;
    expect(expiresAt).to.be.a('number');
    expect(expiresAt).to.be.closeTo(now + 7 * 24 * 3600, 5);
  });

  it('stores the documented session JSON under the documented key', async () => {
    const openid = newOpenid();
    const { token, user_id, token_expires_at } = (await svc.call('login', profile(openid))).body.data;
    const key = keys.session(token);
    expect(key).to.equal(`${keys.prefix}session:{${token}}`);
    const session = JSON.parse((await redis.get(key))!);
    expect(session).to.deep.equal({
      v: 1,
      user_id,
      unionid: null,
      openid,
      issued_at: session.issued_at,
      expires_at: token_expires_at,
      idle_timeout: 172800,
    });
    expect(session.expires_at - session.issued_at).to.equal(604800);
    const ttl = await redis.pttl(key);
    expect(ttl)
      .to.be.greaterThan(0)
      .and.at.most(172800 * 1000);
    // Indexed by its expiry to the millisecond: expires_at is that in whole seconds.
    const score = Number(await redis.zscore(keys.userSessions(openid), token));
    expect(score - token_expires_at * 1000).to.be.within(0, 999);
  });

  it("answers a token's user on POST /session, and -10 / -1 otherwise", async () => {
    const openid = newOpenid();
    const login = (await svc.call('login', profile(openid))).body.data;
    const res = await sessionOf(login.token);
    expect(res.body.code).to.equal(0);
    expect(res.body.data).to.include({ user_id: login.user_id, openid, token_expires_at: login.token_expires_at });
    expect(res.body.data).to.not.have.property('token');

    expect((await sessionOf('A'.repeat(32))).body.code).to.equal(-10);
    expect((await sessionOf('not a token')).body.code).to.equal(-10);
    expect((await svc.call('session', {})).body.code).to.equal(-1);
  });

  it('issues a session from getOpenid, bound to the user once it is registered', async () => {
    const openid = newOpenid();
    wechat.on('js-new', { body: { openid, session_key: 'sk' } });
    const fresh = (await svc.call('getOpenid', { js_code: 'js-new' })).body.data;
    expect(fresh.token).to.match(TOKEN);
    expect(JSON.parse((await redis.get(keys.session(fresh.token)))!).user_id).to.equal(null);
    expect((await sessionOf(fresh.token)).body.code).to.equal(-2); // no such user yet

    const { user_id } = (await svc.call('login', profile(openid))).body.data;
    expect((await sessionOf(fresh.token)).body.data.user_id).to.equal(user_id);
    wechat.on('js-known', { body: { openid, session_key: 'sk2' } });
    const known = (await svc.call('getOpenid', { js_code: 'js-known' })).body.data;
    expect(JSON.parse((await redis.get(keys.session(known.token)))!).user_id).to.equal(user_id);
  });

  it('ends every session of the user, and only that user, on logout; update ends none', async () => {
    const openid = newOpenid();
    const other = newOpenid();
    const { user_id, token: t1 } = (await svc.call('login', profile(openid))).body.data;
    const t2 = (await svc.call('loginByOpenid', { openid })).body.data.token;
    const t3 = (await svc.call('loginByOpenid', { openid })).body.data.token;
    const theirs = (await svc.call('login', profile(other))).body.data.token;

    expect((await svc.call('update', { user_id, update: { nick_name: 'renamed' } })).body.code).to.equal(0);
    for (const t of [t1, t2, t3]) expect((await sessionOf(t)).body.data.nick_name).to.equal('renamed');

    expect((await svc.call('logout', { openid })).body.code).to.equal(0);
    for (const t of [t1, t2, t3]) {
      expect((await sessionOf(t)).body.code).to.equal(-10);
      expect(await redis.exists(keys.session(t))).to.equal(0);
    }
    expect(await redis.exists(keys.userSessions(openid))).to.equal(0);
    expect(await redis.hget(keys.profile(openid), 'user')).to.equal(null);
    expect((await sessionOf(theirs)).body.code).to.equal(0);
  });

  describe('expiry', () => {
    it('ends a session at its absolute expiry', async () => {
      // expires_at is in whole seconds (issued_at rounded down), so a TTL of N s lives N-1 to N s:
      // 2 s leaves the check right after login a second of margin on a slow machine.
      const short = await startService({ SESSION_TTL_SECONDS: 2, SESSION_IDLE_SECONDS: 60 });
      try {
        const openid = newOpenid();
        const { token, token_expires_at } = (await short.call('login', profile(openid))).body.data;
        expect(token_expires_at - Date.now() / 1000).to.be.at.most(2.01);
        expect((await short.call('session', { token })).body.code).to.equal(0);
        await sleep(token_expires_at * 1000 - Date.now() + 100);
        expect((await short.call('session', { token })).body.code).to.equal(-10);
      } finally {
        await short.stop();
      }
    });

    it('ends a session left idle, and keeps a used one alive up to the absolute expiry', async () => {
      const idle = await startService({ SESSION_TTL_SECONDS: 60, SESSION_IDLE_SECONDS: 1 });
      try {
        const openid = newOpenid();
        const used = (await idle.call('login', profile(openid))).body.data.token;
        const unused = (await idle.call('loginByOpenid', { openid })).body.data.token;
        for (let i = 0; i < 4; i++) {
          await sleep(500);
          expect((await idle.call('session', { token: used })).body.code, `use ${i}`).to.equal(0);
        }
        // 2 s have passed: the unused one went idle, the used one is still live.
        expect((await idle.call('session', { token: unused })).body.code).to.equal(-10);
        await sleep(1300);
        expect((await idle.call('session', { token: used })).body.code).to.equal(-10);
      } finally {
        await idle.stop();
      }
    });
  });
});
