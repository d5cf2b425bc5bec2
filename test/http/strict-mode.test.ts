import { expect } from 'chai';
import type { Knex } from 'knex';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { loginBody } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { testDb } from '../helpers/stores';

describe('strict mode (AUTH_MODE=token)', () => {
  let svc: TestService;
  let db: Knex;
  let wechat: FakeWechat;

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await startService({ AUTH_MODE: 'token', WECHAT_API_BASE: wechat.url });
    db = testDb();
  });
  after(async () => {
    await db.destroy();
    await svc.stop();
    await wechat.stop();
  });

  /** A user registered the strict way: wx.login's code proves the openid. */
  async function user() {
    const openid = newOpenid();
    const { js_code } = proveWith(openid);
    const { openid: _, ...profile } = loginBody(openid);
    const data = (await svc.call('login', { js_code, ...profile })).body.data;
    return { openid, user_id: data.user_id as number, token: data.token as string };
  }
  let codes = 0;
  function proveWith(openid: string) {
    const js_code = `strict-code-${++codes}`;
    wechat.on(js_code, { body: { openid, session_key: 'k' } });
    return { js_code };
  }
  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

  it('lets login and loginByOpenid through with a js_code (they issue the token)', async () => {
    const me = await user();
    expect(me.token).to.be.a('string');
    expect((await svc.call('loginByOpenid', proveWith(me.openid))).body.code).to.equal(0);
  });

  it("answers get with -10 without a token, with a bad one, or with another user's", async () => {
    const me = await user();
    const you = await user();
    for (const [what, res] of [
      ['none', await svc.call('get', { openid: me.openid })],
      ['garbage', await svc.call('get', { openid: me.openid }, bearer('garbage'))],
      ['unknown', await svc.call('get', { openid: me.openid }, bearer('Z'.repeat(32)))],
      ["another user's", await svc.call('get', { openid: me.openid }, bearer(you.token))],
    ] as const) {
      expect(res.status, what).to.equal(200);
      expect(res.body.code, what).to.equal(-10);
      expect(res.body.data, what).to.equal(null);
    }
  });

  it("answers get for the token's own user, by header or by a token body field", async () => {
    const me = await user();
    expect((await svc.call('get', { openid: me.openid }, bearer(me.token))).body.data.openid).to.equal(me.openid);
    const form = await svc.call('get', { openid: me.openid, token: me.token }, { form: true });
    expect(form.body.code).to.equal(0);
  });

  it('refuses an update of another user_id and changes nothing', async () => {
    const me = await user();
    const you = await user();
    const [before] = await db('users').where({ id: you.user_id });
    const res = await svc.call('update', { user_id: you.user_id, update: { nick_name: 'hijacked' } }, bearer(me.token));
    expect(res.body.code).to.equal(-10);
    expect((await svc.call('update', { user_id: you.user_id, update: { nick_name: 'x' } })).body.code).to.equal(-10);
    const [after] = await db('users').where({ id: you.user_id });
    expect(after).to.deep.equal(before);

    const own = await svc.call('update', { user_id: me.user_id, update: { nick_name: 'mine' }, token: me.token });
    expect(own.body.code).to.equal(0);
  });

  it("refuses logout without the user's token; with it, ends the sessions", async () => {
    const me = await user();
    const you = await user();
    expect((await svc.call('logout', { openid: me.openid })).body.code).to.equal(-10);
    expect((await svc.call('logout', { openid: me.openid }, bearer(you.token))).body.code).to.equal(-10);
    expect((await svc.call('get', { openid: me.openid }, bearer(me.token))).body.code).to.equal(0);

    expect((await svc.call('logout', { openid: me.openid }, bearer(me.token))).body.code).to.equal(0);
    expect((await svc.call('get', { openid: me.openid }, bearer(me.token))).body.code).to.equal(-10);
  });

  it('still answers -1 for invalid input before looking at the token', async () => {
    expect((await svc.call('get', {})).body.code).to.equal(-1);
    expect((await svc.call('update', { user_id: 'x' })).body.code).to.equal(-1);
  });
});
