import { expect } from 'chai';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import type { Answer } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';

const SECRET = 'wechat-secret-that-must-not-leak-42';
const PHONE = '13912345678';
const NEW_PHONE = '13787654321';

describe('secrets stay out of logs and messages', function () {
  this.timeout(20_000);
  const logs = new LogCapture();
  let wechat: FakeWechat;
  let svc: TestService;

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await startService(
      { WECHAT_API_BASE: wechat.url, WECHAT_SECRET: SECRET, LOG_LEVEL: 'trace', AUTH_MODE: 'token' },
      logs,
    );
  });
  after(async () => {
    await svc.stop();
    await wechat.stop();
  });

  it('logs a full session at trace level without a token, session_key, the secret or a phone number', async () => {
    const openid = newOpenid();
    const sessionKey = `session-key-${openid}`;
    const answers: Answer[] = [];
    const call = async (route: string, body: unknown, token?: string) => {
      const res = await svc.call(route, body, token ? { headers: { authorization: `Bearer ${token}` } } : {});
      answers.push(res);
      return res;
    };

    wechat.on('code-1', { body: { openid, session_key: sessionKey, unionid: 'u1' } });
    wechat.on('code-used', { body: { errcode: 40163, errmsg: `code been used, session_key ${sessionKey}` } });
    const first = (await call('getOpenid', { js_code: 'code-1' })).body.data;
    await call('getOpenid', { js_code: 'code-used' });
    const login = (
      await call(
        'login',
        { openid, nick_name: '测试', avatar: 'https://e.com/a', gender: 1, phone: PHONE },
        first.token,
      )
    ).body.data;
    const again = (await call('loginByOpenid', { openid }, first.token)).body.data;
    await call('get', { openid }, again.token);
    await call('update', { user_id: login.user_id, update: { phone: NEW_PHONE } }, again.token);
    await call('update', { user_id: login.user_id, update: `{"phone":"${NEW_PHONE}"` }, again.token); // -3
    await call('update', { user_id: login.user_id, update: { phone: NEW_PHONE, openid: 'x' } }, again.token); // -4
    await call('get', { openid }, `${login.token.slice(0, -1)}x`); // -10
    await call('session', { token: login.token });
    await call('login', { openid: 'bad id', nick_name: 'x', avatar: 'nope', gender: 1, phone: PHONE }); // -1
    await call('logout', { openid }, login.token);

    const tokens = [first.token, login.token, again.token];
    const forbidden = [SECRET, sessionKey, PHONE, NEW_PHONE, ...tokens];
    expect(logs.lines.length).to.be.greaterThan(0);
    for (const secret of forbidden) expect(logs.text, 'log').to.not.include(secret);
    // Error messages carry none of them either (successful answers legitimately hold the
    // caller's own phone and token).
    for (const a of answers.filter((x) => x.body.code !== 0)) {
      for (const secret of forbidden) expect(a.body.msg).to.not.include(secret);
    }
  });
});
