import { expect } from 'chai';
import type { RedisClient as Redis } from '../../src/redis/client';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { userPart } from '../helpers/http';
import { freePort } from '../helpers/redis-server';
import { LogCapture, startService, type TestService } from '../helpers/service';
import { testKeys, testRedis } from '../helpers/stores';

const SECRET = 'test-wechat-secret-0123456789';

describe('getOpenid (WeChat jscode2session)', function () {
  this.timeout(20_000);
  let wechat: FakeWechat;
  let svc: TestService;
  let redis: Redis;
  const logs = new LogCapture();
  const keys = testKeys();

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await startService(
      {
        WECHAT_API_BASE: wechat.url,
        WECHAT_APPID: 'wx-app',
        WECHAT_SECRET: SECRET,
        WECHAT_TIMEOUT_MS: 500,
        LOG_LEVEL: 'trace',
      },
      logs,
    );
    redis = testRedis();
  });
  after(async () => {
    redis.disconnect();
    await svc.stop();
    await wechat.stop();
  });

  it('answers the openid, keeps session_key in Redis with a TTL and out of the answer', async () => {
    const openid = newOpenid();
    const sessionKey = `sk-${openid}`;
    wechat.on('code-ok', { body: { openid, session_key: sessionKey } });
    const res = await svc.call('getOpenid', { js_code: 'code-ok' });
    expect(res.body.code).to.equal(0);
    expect(userPart(res.body.data)).to.deep.equal({ openid });
    expect(res.body.data.token).to.be.a('string');
    expect(res.text).to.not.include(sessionKey);

    const stored = await redis.hgetall(keys.wechatSession(openid));
    expect(stored.session_key).to.equal(sessionKey);
    const ttl = await redis.ttl(keys.wechatSession(openid));
    expect(ttl).to.be.greaterThan(0);

    const sent = wechat.requests.at(-1)!;
    expect(sent.pathname).to.equal('/sns/jscode2session');
    expect(Object.fromEntries(sent.searchParams)).to.deep.equal({
      appid: 'wx-app',
      secret: SECRET,
      js_code: 'code-ok',
      grant_type: 'authorization_code',
    });

    // logout forgets the session_key too
    await svc.call('logout', { openid });
    expect(await redis.exists(keys.wechatSession(openid))).to.equal(0);
  });

  it('passes unionid on when WeChat sends one', async () => {
    const openid = newOpenid();
    wechat.on('code-union', { body: { openid, session_key: 'sk', unionid: 'union-1' } });
    const res = await svc.call('getOpenid', { js_code: 'code-union' }, { form: true });
    expect(userPart(res.body.data)).to.deep.equal({ openid, unionid: 'union-1' });
  });

  it('answers -1 without a js_code', async () => {
    expect((await svc.call('getOpenid', {})).body.code).to.equal(-1);
    expect((await svc.call('getOpenid', { js_code: '' })).body.code).to.equal(-1);
  });

  const refusals: [number, RegExp][] = [
    [40029, /invalid js_code/],
    [40163, /already used/],
    [45011, /rate limited/],
  ];
  for (const [errcode, msg] of refusals) {
    it(`answers -2 saying why for WeChat errcode ${errcode}, without retrying`, async () => {
      const code = `code-${errcode}`;
      wechat.on(code, { body: { errcode, errmsg: 'nope' } });
      const before = wechat.requests.length;
      const res = await svc.call('getOpenid', { js_code: code });
      expect(res.body.code).to.equal(-2);
      expect(res.body.msg).to.match(msg).and.include(String(errcode));
      expect(wechat.requests.length - before).to.equal(1);
    });
  }

  it('retries once when WeChat is busy (errcode -1), then succeeds', async () => {
    const openid = newOpenid();
    wechat.on('code-busy-once', { body: { errcode: -1, errmsg: 'busy' } }, { body: { openid, session_key: 'sk' } });
    const before = wechat.requests.length;
    const res = await svc.call('getOpenid', { js_code: 'code-busy-once' });
    expect(res.body.code).to.equal(0);
    expect(res.body.data.openid).to.equal(openid);
    expect(wechat.requests.length - before).to.equal(2);
  });

  it('answers -2 when WeChat stays busy after the retry', async () => {
    wechat.on('code-busy', { body: { errcode: -1, errmsg: 'busy' } });
    const before = wechat.requests.length;
    const res = await svc.call('getOpenid', { js_code: 'code-busy' });
    expect(res.body.code).to.equal(-2);
    expect(res.body.msg).to.match(/busy/);
    expect(wechat.requests.length - before).to.equal(2);
  });

  it('answers -2 on a timeout, within a bounded time', async () => {
    wechat.on('code-hang', { hang: true });
    const start = performance.now();
    const res = await svc.call('getOpenid', { js_code: 'code-hang' });
    expect(res.body.code).to.equal(-2);
    expect(res.body.msg).to.match(/no answer within 500 ms/);
    expect(performance.now() - start).to.be.below(3_000);
  });

  it('answers -2 on an answer that is not JSON, or an HTTP error', async () => {
    wechat.on('code-html', { raw: '<html>bad gateway</html>' });
    expect((await svc.call('getOpenid', { js_code: 'code-html' })).body.msg).to.match(/not JSON/);
    wechat.on('code-500', { status: 502, raw: 'bad gateway' });
    const res = await svc.call('getOpenid', { js_code: 'code-500' });
    expect(res.body.code).to.equal(-2);
    expect(res.body.msg).to.match(/HTTP 502/);
  });

  it('answers -2 when WeChat is unreachable', async () => {
    const port = await freePort();
    const other = await startService({
      WECHAT_API_BASE: `http://127.0.0.1:${port}`,
      WECHAT_APPID: 'wx-app',
      WECHAT_SECRET: SECRET,
    });
    try {
      const res = await other.call('getOpenid', { js_code: 'any' });
      expect(res.body.code).to.equal(-2);
      expect(res.body.msg).to.match(/unreachable/);
    } finally {
      await other.stop();
    }
  });

  it('never writes the secret or a session_key to the log', () => {
    expect(logs.lines.length).to.be.greaterThan(0);
    expect(logs.text).to.not.include(SECRET);
    expect(logs.text).to.not.match(/sk-o_/);
  });
});
