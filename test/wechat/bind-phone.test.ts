import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { RedisClient as Redis } from '../../src/redis/client';
import { userOutput } from '../../src/users/schemas';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { loginBody } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';
import { testKeys, testRedis } from '../helpers/stores';

const SECRET = 'bind-phone-wechat-secret-42';
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const newCode = () => `phone-code-${randomBytes(8).toString('hex')}`;
/** WECHAT_TOKEN_REFUSAL_BACKOFF_MS of the service here: short, so that tests can outwait it. */
const BACKOFF_MS = 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const newPhone = () => `139${String(Math.floor(Math.random() * 1e8)).padStart(8, '0')}`;

describe('bindPhone (WeChat getuserphonenumber, one shared access token)', function () {
  this.timeout(30_000);
  let wechat: FakeWechat;
  let svc: TestService;
  let redis: Redis;
  const logs = new LogCapture();
  const keys = testKeys();
  const appid = `wx-bind-${randomBytes(3).toString('hex')}`;
  const secrets: string[] = [];

  /** A registered user and its session token. */
  async function user(): Promise<{ openid: string; token: string; user_id: number }> {
    const openid = newOpenid('bp');
    const login = await svc.call('login', loginBody(openid, { phone: 'none' }));
    expect(login.body.code).to.equal(0);
    return { openid, token: login.body.data.token, user_id: login.body.data.user_id };
  }

  /** A code WeChat will exchange for a fresh phone number (both remembered for the log check). */
  function phoneCode(): { code: string; phone: string } {
    const code = newCode();
    const phone = newPhone();
    wechat.phoneCode(code, phone);
    secrets.push(code, phone);
    return { code, phone };
  }

  before(async () => {
    wechat = await new FakeWechat().start();
    redis = testRedis();
    svc = await startService(
      {
        WECHAT_API_BASE: wechat.url,
        WECHAT_APPID: appid,
        WECHAT_SECRET: SECRET,
        // The fake shares this process with the service: a loaded machine must not time it out.
        WECHAT_TIMEOUT_MS: 5000,
        REDIS_COMMAND_TIMEOUT_MS: 2000,
        WECHAT_TOKEN_REFUSAL_BACKOFF_MS: BACKOFF_MS,
        LOG_LEVEL: 'trace',
      },
      logs,
    );
  });
  after(async () => {
    redis.disconnect();
    await svc.stop();
    await wechat.stop();
  });

  it('stores the phone WeChat gives for the code, answers the user, and a read right after sees it', async () => {
    const u = await user();
    // The cached profile (phone "none") must not outlive the answer.
    expect((await svc.call('get', { openid: u.openid })).body.data.phone).to.equal('none');
    const { code, phone } = phoneCode();
    const res = await svc.call('bindPhone', { code }, bearer(u.token));
    expect(res.body).to.include({ code: 0 });
    expect(res.body.data).to.include({ user_id: u.user_id, openid: u.openid, phone });
    expect(userOutput.validate(res.body.data, { convert: false }).error).to.equal(undefined);
    expect((await svc.call('get', { openid: u.openid })).body.data.phone).to.equal(phone);
    expect((await svc.call('loginByOpenid', { openid: u.openid })).body.data.phone).to.equal(phone);

    const call = wechat.phoneCalls.at(-1)!;
    expect(call.body).to.deep.equal({ code, openid: u.openid });
    const token = call.url.searchParams.get('access_token');
    expect(token).to.equal(wechat.issuedTokens.at(-1));
    expect(wechat.tokenCalls.at(-1)!.body).to.deep.equal({
      grant_type: 'client_credential',
      appid,
      secret: SECRET,
      force_refresh: false,
    });
    // The token is shared through Redis, with WeChat's expires_in as its TTL.
    expect(await redis.get(keys.wechatAccessToken(appid))).to.equal(token);
    const ttl = await redis.pttl(keys.wechatAccessToken(appid));
    expect(ttl).to.be.within(7_000_000, 7_200_000);
  });

  it('takes the token from the body too, and reuses the cached access token', async () => {
    const u = await user();
    const before = wechat.tokenCalls.length;
    const { code, phone } = phoneCode();
    const res = await svc.call('bindPhone', { code, token: u.token });
    expect(res.body.code).to.equal(0);
    expect(res.body.data.phone).to.equal(phone);
    expect(wechat.tokenCalls.length).to.equal(before);
  });

  it('-10 without a valid session, in openid mode too; -1 without a code; nothing reaches WeChat', async () => {
    const u = await user();
    const calls = wechat.phoneCalls.length;
    const { code } = phoneCode();
    expect((await svc.call('bindPhone', { code })).body.code).to.equal(-10);
    expect((await svc.call('bindPhone', { code }, bearer('x'.repeat(32)))).body.code).to.equal(-10);
    expect((await svc.call('bindPhone', { code, token: 'nope' })).body.code).to.equal(-10);
    expect((await svc.call('bindPhone', {}, bearer(u.token))).body.code).to.equal(-1);
    expect((await svc.call('bindPhone', { code: '' }, bearer(u.token))).body.code).to.equal(-1);
    expect((await svc.call('bindPhone', { code: 'a b' }, bearer(u.token))).body.code).to.equal(-1);
    expect((await svc.call('bindPhone', { code: 'c'.repeat(129) }, bearer(u.token))).body.code).to.equal(-1);
    expect(wechat.phoneCalls.length).to.equal(calls);
    expect((await svc.call('get', { openid: u.openid })).body.data.phone).to.equal('none');
  });

  it('a refused code (40029) is -2, asked once and never retried; the phone stays', async () => {
    const u = await user();
    const code = newCode();
    secrets.push(code);
    const res = await svc.call('bindPhone', { code }, bearer(u.token));
    expect(res.body.code).to.equal(-2);
    expect(res.body.msg).to.include('40029');
    expect(res.text).to.not.include(code);
    expect(wechat.phoneCalls.filter((c) => c.body.code === code)).to.have.length(1);
    // A used code is refused the same way.
    const used = phoneCode();
    expect((await svc.call('bindPhone', { code: used.code }, bearer(u.token))).body.code).to.equal(0);
    expect((await svc.call('bindPhone', { code: used.code }, bearer(u.token))).body.code).to.equal(-2);
    expect(wechat.phoneCalls.filter((c) => c.body.code === used.code)).to.have.length(2);
  });

  it('a token WeChat revokes is refreshed once, and the call succeeds', async () => {
    const u = await user();
    await svc.call('bindPhone', phoneCode(), bearer(u.token)); // a token is cached
    const revokedToken = wechat.issuedTokens.at(-1)!;
    wechat.revoke();
    const tokenCalls = wechat.tokenCalls.length;
    const { code, phone } = phoneCode();
    const res = await svc.call('bindPhone', { code }, bearer(u.token));
    expect(res.body.code).to.equal(0);
    expect(res.body.data.phone).to.equal(phone);
    expect(wechat.tokenCalls.length).to.equal(tokenCalls + 1);
    const calls = wechat.phoneCalls.filter((c) => c.body.code === code);
    expect(calls.map((c) => c.url.searchParams.get('access_token'))).to.deep.equal([
      revokedToken,
      wechat.issuedTokens.at(-1),
    ]);
    expect(await redis.get(keys.wechatAccessToken(appid))).to.equal(wechat.issuedTokens.at(-1));
  });

  it('many calls meeting a revoked token refresh it once between them', async () => {
    const users = await Promise.all(Array.from({ length: 5 }, () => user()));
    await svc.call('bindPhone', phoneCode(), bearer(users[0]!.token));
    wechat.revoke();
    const tokenCalls = wechat.tokenCalls.length;
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => svc.call('bindPhone', phoneCode(), bearer(users[i % 5]!.token))),
    );
    for (const a of answers) expect(a.body, a.body.msg).to.include({ code: 0 });
    expect(wechat.tokenCalls.length).to.equal(tokenCalls + 1);
  });

  it('a session whose openid has no user is -4, before the code is spent', async () => {
    const openid = newOpenid('bp-unregistered');
    wechat.on('js-unregistered', { body: { openid, session_key: 'sk' } });
    const session = await svc.call('getOpenid', { js_code: 'js-unregistered' });
    expect(session.body, session.body.msg).to.include({ code: 0 });
    const calls = wechat.phoneCalls.length;
    const res = await svc.call('bindPhone', phoneCode(), bearer(session.body.data.token));
    expect(res.body.code).to.equal(-4);
    expect(wechat.phoneCalls.length).to.equal(calls);
  });

  it('WeChat unreachable or refusing a token is -2, and the secret stays out of the answer', async () => {
    const u = await user();
    await redis.del(keys.wechatAccessToken(appid));
    wechat.tokenRefusal = { errcode: 40125, errmsg: `invalid appsecret ${SECRET}` };
    try {
      const res = await svc.call('bindPhone', phoneCode(), bearer(u.token));
      expect(res.body.code).to.equal(-2);
      expect(res.body.msg).to.include('40125');
      expect(res.text).to.not.include(SECRET);
      expect(res.text).to.not.include(appid);
    } finally {
      wechat.tokenRefusal = undefined;
    }
    // The lock was released: once the refusal's backoff is over, the next call refreshes.
    expect(await redis.exists(keys.wechatAccessTokenLock(appid))).to.equal(0);
    await sleep(BACKOFF_MS + 50);
    expect((await svc.call('bindPhone', phoneCode(), bearer(u.token))).body.code).to.equal(0);
  });

  it('a refusing WeChat (40164) is asked once per backoff: 20 calls in a row make one stable_token call', async () => {
    const u = await user();
    await redis.del(keys.wechatAccessToken(appid));
    await sleep(BACKOFF_MS + 50); // no refusal of an earlier test is still remembered
    wechat.tokenRefusal = { errcode: 40164, errmsg: 'invalid ip 10.0.0.1, not in whitelist' };
    const asked = wechat.tokenCalls.length;
    try {
      const started = performance.now();
      for (let i = 0; i < 20; i++) {
        const res = await svc.call('bindPhone', phoneCode(), bearer(u.token));
        expect(res.body.code, `call ${i}`).to.equal(-2);
        expect(res.body.msg).to.include('40164');
      }
      const within = performance.now() - started < BACKOFF_MS;
      // On a machine too slow to make 20 calls within the backoff, one more ask is fair.
      expect(wechat.tokenCalls.length - asked).to.equal(within ? 1 : 2);
      const ttl = await redis.pttl(keys.wechatAccessTokenRefused(appid));
      if (within) expect(ttl).to.be.within(1, BACKOFF_MS);
      // After the backoff WeChat is asked again, once, and its refusal remembered again.
      await sleep(BACKOFF_MS + 50);
      const again = wechat.tokenCalls.length;
      for (let i = 0; i < 3; i++)
        expect((await svc.call('bindPhone', phoneCode(), bearer(u.token))).body.code).to.equal(-2);
      expect(wechat.tokenCalls.length - again).to.equal(1);
    } finally {
      wechat.tokenRefusal = undefined;
    }
    await sleep(BACKOFF_MS + 50);
    expect((await svc.call('bindPhone', phoneCode(), bearer(u.token))).body.code).to.equal(0);
  });

  it('no phone number, code, access token or secret in the log', () => {
    const text = logs.text;
    expect(text).to.include('wechat access token refreshed');
    expect(secrets.length).to.be.greaterThan(20);
    for (const secret of [...secrets, ...wechat.issuedTokens, SECRET]) expect(text).to.not.include(secret);
  });
});

describe('bindPhone in strict mode (AUTH_MODE=token)', function () {
  this.timeout(20_000);
  let wechat: FakeWechat;
  let svc: TestService;

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await startService({ WECHAT_API_BASE: wechat.url, AUTH_MODE: 'token', WECHAT_APPID: 'wx-strict-bind' });
  });
  after(async () => {
    await svc.stop();
    await wechat.stop();
  });

  it('needs the session too, and serves its user', async () => {
    const openid = newOpenid('bps');
    // Strict mode registers only a proven openid: a wx.login code here.
    wechat.on('bps-login', { body: { openid, session_key: 'k' } });
    const { openid: _, ...profile } = loginBody(openid);
    const login = await svc.call('login', { js_code: 'bps-login', ...profile });
    wechat.phoneCode('strict-code', '13700000001');
    expect((await svc.call('bindPhone', { code: 'strict-code' })).body.code).to.equal(-10);
    const res = await svc.call('bindPhone', { code: 'strict-code' }, bearer(login.body.data.token));
    expect(res.body.code).to.equal(0);
    expect(res.body.data).to.include({ openid, phone: '13700000001' });
  });
});
