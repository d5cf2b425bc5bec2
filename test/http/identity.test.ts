import { expect } from 'chai';
import type { Knex } from 'knex';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { loginBody } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';
import { testDb, testKeys, testRedis } from '../helpers/stores';
import type { RedisClient } from '../../src/redis/client';

/**
 * Who is calling: js_code logins in both modes, the getOpenid token as proof, a trusted
 * gateway's header, and unionid from WeChat to the table to every answer. Each `it` backs a
 * cell of the threat-model table in docs/security.md.
 */
describe('identity: proof of the openid, and unionid', () => {
  let wechat: FakeWechat;
  let db: Knex;
  let redis: RedisClient;
  const started: TestService[] = [];
  let codes = 0;

  before(async () => {
    wechat = await new FakeWechat().start();
    db = testDb();
    redis = testRedis();
  });
  after(async () => {
    for (const svc of started) await svc.stop();
    await db.destroy();
    redis.disconnect();
    await wechat.stop();
  });

  async function service(env: Record<string, string> = {}, logs?: LogCapture): Promise<TestService> {
    const svc = await startService({ WECHAT_API_BASE: wechat.url, ...env }, logs);
    started.push(svc);
    return svc;
  }

  /** A wx.login code that WeChat answers with this openid (and unionid). */
  function codeFor(openid: string, unionid?: string): string {
    const code = `id-code-${++codes}`;
    wechat.on(code, { body: { openid, session_key: `sk-${codes}`, ...(unionid ? { unionid } : {}) } });
    return code;
  }
  const profile = (openid: string) => {
    const { openid: _, ...rest } = loginBody(openid);
    return rest;
  };
  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
  const rows = (openid: string) => db('users').where({ openid });

  describe('strict mode (AUTH_MODE=token)', () => {
    let svc: TestService;
    before(async () => {
      svc = await service({ AUTH_MODE: 'token' });
    });

    it('refuses login with a bare openid: no squatting, no row, no token', async () => {
      const victim = newOpenid();
      const res = await svc.call('login', loginBody(victim, { phone: '13800000000' }));
      expect(res.body.code).to.equal(-10);
      expect(res.body.data).to.equal(null);
      expect(await rows(victim)).to.have.length(0);
      // The real owner, proving the openid later, registers the profile it sends.
      const owner = await svc.call('login', { js_code: codeFor(victim), ...profile(victim), nick_name: 'owner' });
      expect(owner.body.code).to.equal(0);
      expect(owner.body.data.nick_name).to.equal('owner');
    });

    it('refuses loginByOpenid with a bare openid: no profile, no token, even for a registered user', async () => {
      const openid = newOpenid();
      await svc.call('login', { js_code: codeFor(openid), ...profile(openid) });
      const res = await svc.call('loginByOpenid', { openid });
      expect(res.body).to.deep.equal({ code: -10, msg: res.body.msg, data: null });
      expect(res.text).not.to.include(openid);
    });

    it('passes getOpenid -> login -> update end to end with the tokens it issues', async () => {
      const openid = newOpenid();
      const got = await svc.call('getOpenid', { js_code: codeFor(openid) });
      expect(got.body.code).to.equal(0);
      const login = await svc.call('login', loginBody(openid), bearer(got.body.data.token));
      expect(login.body.code).to.equal(0);
      const { user_id, token } = login.body.data;
      const upd = await svc.call('update', { user_id, update: { nick_name: 'changed' } }, bearer(token));
      expect(upd.body.code).to.equal(0);
      const again = await svc.call('loginByOpenid', { openid, token: got.body.data.token }, { form: true });
      expect(again.body.code).to.equal(0);
      expect(again.body.data.nick_name).to.equal('changed');
    });

    it('refuses proof for openid A with openid B in the body (-10), and writes nothing', async () => {
      const a = newOpenid();
      const b = newOpenid();
      const tokenOfA = (await svc.call('getOpenid', { js_code: codeFor(a) })).body.data.token;
      for (const [what, res] of [
        ['js_code', await svc.call('login', { js_code: codeFor(a), ...loginBody(b) })],
        ['token', await svc.call('login', loginBody(b), bearer(tokenOfA))],
        ['token on loginByOpenid', await svc.call('loginByOpenid', { openid: b }, bearer(tokenOfA))],
      ] as const) {
        expect(res.body.code, what).to.equal(-10);
        expect(res.body.data, what).to.equal(null);
      }
      expect(await rows(a)).to.have.length(0);
      expect(await rows(b)).to.have.length(0);
    });

    it('refuses a token that is unknown or expired (-10)', async () => {
      const openid = newOpenid();
      const res = await svc.call('loginByOpenid', { openid }, bearer('Z'.repeat(32)));
      expect(res.body.code).to.equal(-10);
    });
  });

  describe("openid mode (the document's contract)", () => {
    it('lets a caller holding only an openid read the phone and get a token, and one holding a user_id rewrite the profile', async () => {
      const svc = await service({ AUTH_MODE: 'openid' });
      const openid = newOpenid();
      const owner = await svc.call('login', { js_code: codeFor(openid), ...profile(openid), phone: '13800000001' });
      // What the threat model says a stranger can do in this mode; strict mode refuses each.
      const read = await svc.call('get', { openid });
      expect(read.body.data.phone).to.equal('13800000001');
      const stolen = await svc.call('loginByOpenid', { openid });
      expect(stolen.body.data.token).to.be.a('string');
      const rewrite = await svc.call('update', { user_id: owner.body.data.user_id, update: { nick_name: 'x' } });
      expect(rewrite.body.code).to.equal(0);
      const squat = newOpenid();
      expect((await svc.call('login', loginBody(squat))).body.code).to.equal(0);
    });
  });

  describe('js_code logins', () => {
    for (const mode of ['openid', 'token']) {
      it(`register and log in with a js_code alone (AUTH_MODE=${mode})`, async () => {
        const svc = await service({ AUTH_MODE: mode });
        const openid = newOpenid();
        const login = await svc.call('login', { js_code: codeFor(openid), ...profile(openid) });
        expect(login.body.code).to.equal(0);
        expect(login.body.data.openid).to.equal(openid);
        const again = await svc.call('loginByOpenid', { js_code: codeFor(openid) });
        expect(again.body.code).to.equal(0);
        expect(again.body.data.user_id).to.equal(login.body.data.user_id);
        expect(again.body.data.token).to.be.a('string');
        // The session_key is kept server-side as getOpenid keeps it.
        expect(await redis.hget(testKeys().wechatSession(openid), 'session_key')).to.match(/^sk-/);
      });
    }

    it('answers -2 for a code WeChat refuses, and writes nothing', async () => {
      const svc = await service();
      const openid = newOpenid();
      wechat.on('refused-code', { body: { errcode: 40029, errmsg: 'invalid code' } });
      const before = wechat.requests.length;
      const res = await svc.call('login', { js_code: 'refused-code', ...profile(openid) });
      expect(res.body.code).to.equal(-2);
      expect(res.body.msg).to.include('40029');
      expect(wechat.requests.length - before).to.equal(1);
      expect((await svc.call('loginByOpenid', { js_code: 'refused-code' })).body.code).to.equal(-2);
      expect(await rows(openid)).to.have.length(0);
    });

    it('answers -1 when there is neither an openid nor a js_code', async () => {
      const svc = await service();
      expect((await svc.call('loginByOpenid', {})).body.code).to.equal(-1);
      expect((await svc.call('login', profile('x'))).body.code).to.equal(-1);
    });

    it('refuses a js_code of another openid than the body names, in openid mode too', async () => {
      const svc = await service();
      const a = newOpenid();
      const b = newOpenid();
      const res = await svc.call('login', { js_code: codeFor(a), ...loginBody(b) });
      expect(res.body.code).to.equal(-10);
      expect(await rows(b)).to.have.length(0);
    });
  });

  describe('a trusted gateway (TRUSTED_OPENID_HEADER)', () => {
    const gateway = (openid: string, unionid?: string) => ({
      headers: { 'x-wx-openid': openid, ...(unionid ? { 'x-wx-unionid': unionid } : {}) },
    });

    it('is honoured when configured: the header alone proves the openid, in strict mode', async () => {
      const svc = await service({
        AUTH_MODE: 'token',
        TRUSTED_OPENID_HEADER: 'X-WX-OPENID',
        TRUSTED_UNIONID_HEADER: 'x-wx-unionid',
      });
      const openid = newOpenid();
      const login = await svc.call('login', profile(openid), gateway(openid));
      expect(login.body.code).to.equal(0);
      expect(login.body.data.openid).to.equal(openid);
      expect((await svc.call('loginByOpenid', {}, gateway(openid))).body.data.user_id).to.equal(
        login.body.data.user_id,
      );
      expect((await svc.call('loginByOpenid', { openid }, gateway(openid))).body.code).to.equal(0);
    });

    it('is refused when it disagrees with the body, and when it is not an openid', async () => {
      const svc = await service({ TRUSTED_OPENID_HEADER: 'x-wx-openid' });
      const a = newOpenid();
      const b = newOpenid();
      expect((await svc.call('login', loginBody(b), gateway(a))).body.code).to.equal(-10);
      expect((await svc.call('login', loginBody(b), gateway('}{bad'))).body.code).to.equal(-10);
      expect((await svc.call('login', { js_code: codeFor(b), ...profile(b) }, gateway(a))).body.code).to.equal(-10);
      expect(await rows(b)).to.have.length(0);
    });

    it('is ignored when not configured: any client can send the header', async () => {
      const strict = await service({ AUTH_MODE: 'token' });
      const a = newOpenid();
      const res = await strict.call('login', loginBody(a), gateway(a));
      expect(res.body.code).to.equal(-10);
      const open = await service();
      const b = newOpenid();
      // In openid mode the body's openid counts and the stray header changes nothing.
      const login = await open.call('login', loginBody(b), gateway(a));
      expect(login.body.code).to.equal(0);
      expect(login.body.data.openid).to.equal(b);
      expect(await rows(a)).to.have.length(0);
    });
  });

  describe('unionid', () => {
    it('goes from WeChat to the table, to get, to the login answers and to the session JSON', async () => {
      const svc = await service();
      const openid = newOpenid();
      const unionid = `u${newOpenid()}`;
      const login = await svc.call('login', { js_code: codeFor(openid, unionid), ...profile(openid) });
      expect(login.body.data.unionid).to.equal(unionid);
      const [row] = await rows(openid);
      expect(row.unionid).to.equal(unionid);
      expect((await svc.call('get', { openid })).body.data.unionid).to.equal(unionid);
      const again = await svc.call('loginByOpenid', { openid });
      expect(again.body.data.unionid).to.equal(unionid);
      const session = JSON.parse((await redis.get(testKeys().session(again.body.data.token)))!);
      expect(session).to.include({ openid, unionid, user_id: row.id });
      const bySession = await svc.call('session', { token: again.body.data.token });
      expect(bySession.body.data.unionid).to.equal(unionid);
    });

    it('is null until known, then stored when a later proven login tells it (cache invalidated)', async () => {
      const svc = await service();
      const openid = newOpenid();
      await svc.call('login', loginBody(openid));
      const before = await svc.call('get', { openid });
      expect(before.body.data.unionid).to.equal(null);
      const unionid = `u${newOpenid()}`;
      const proven = await svc.call('loginByOpenid', { js_code: codeFor(openid, unionid) });
      expect(proven.body.code).to.equal(0);
      expect(proven.body.data.unionid).to.equal(unionid);
      expect((await svc.call('get', { openid })).body.data.unionid).to.equal(unionid);
      expect((await rows(openid))[0].unionid).to.equal(unionid);
    });

    it("comes from the gateway's unionid header too, and getOpenid's session carries it", async () => {
      const svc = await service({ TRUSTED_OPENID_HEADER: 'x-wx-openid', TRUSTED_UNIONID_HEADER: 'x-wx-unionid' });
      const openid = newOpenid();
      const unionid = `u${newOpenid()}`;
      const login = await svc.call('login', profile(openid), {
        headers: { 'x-wx-openid': openid, 'x-wx-unionid': unionid },
      });
      expect(login.body.data.unionid).to.equal(unionid);

      const other = newOpenid();
      const otherUnion = `u${newOpenid()}`;
      const got = await svc.call('getOpenid', { js_code: codeFor(other, otherUnion) });
      const session = JSON.parse((await redis.get(testKeys().session(got.body.data.token)))!);
      expect(session).to.include({ openid: other, unionid: otherUnion, user_id: null });
    });
  });

  it('warns once at start in production when AUTH_MODE=openid', async () => {
    const logs = new LogCapture();
    await service({ NODE_ENV: 'production', LOG_LEVEL: 'warn', AUTH_MODE: 'openid' }, logs);
    const warnings = logs.lines.map((l) => JSON.parse(l)).filter((l) => /AUTH_MODE/.test(l.msg));
    expect(warnings).to.have.length(1);
    expect(warnings[0].level).to.equal(40);
    expect(warnings[0].msg).to.include('anyone who knows an openid');

    const quiet = new LogCapture();
    await service({ NODE_ENV: 'production', LOG_LEVEL: 'warn', AUTH_MODE: 'token' }, quiet);
    expect(quiet.text).not.to.include('AUTH_MODE');
  });
});
