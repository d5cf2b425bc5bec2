import { expect } from 'chai';
import type { RedisClient } from '../../src/redis/client';
import { newOpenid } from '../helpers/env';
import { FakeWechat, type WechatReply } from '../helpers/fake-wechat';
import { loginBody } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';
import { testDb, testKeys, testRedis } from '../helpers/stores';
import type { Knex } from '../../src/db/knex';

const ODD_OPENIDS: [string, string][] = [
  ['a closing brace first', '}abc'],
  ['a hash tag', '{x}'],
  ['braces inside', 'o{1}2'],
  ['a space', 'a b'],
  ['a trailing space', 'abc '],
  ['only a space', ' '],
  ['unicode', '张三'],
  ['an emoji', 'o😀'],
  ['a dot', 'a.b'],
  ['a slash', 'a/b'],
  ['NUL', 'a\u0000b'],
  ['65 characters', 'o'.repeat(65)],
  ['empty', ''],
];

/** Every route that takes an openid, with a body carrying `openid`. */
const ROUTES: [string, (openid: string) => object][] = [
  ['login', (openid) => loginBody(openid)],
  ['loginByOpenid', (openid) => ({ openid })],
  ['get', (openid) => ({ openid })],
  ['logout', (openid) => ({ openid })],
];

describe('openids have a shape: [A-Za-z0-9_-]{1,64}', function () {
  this.timeout(30_000);
  let svc: TestService;
  let wechat: FakeWechat;
  let redis: RedisClient;
  let db: Knex;
  const keys = testKeys();
  const logs = new LogCapture();

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await startService({ WECHAT_API_BASE: wechat.url, LOG_LEVEL: 'warn' }, logs);
    redis = testRedis();
    db = testDb();
  });
  after(async () => {
    redis.disconnect();
    await db.destroy();
    await svc.stop();
    await wechat.stop();
  });

  /** What a call could have left behind for `openid`: its row and its Redis keys. */
  async function traces(openid: string): Promise<number> {
    const [{ n }] = await db('users').where({ openid }).count({ n: '*' });
    const redisKeys = [keys.profile(openid), keys.userSessions(openid), keys.wechatSession(openid)];
    let found = Number(n);
    for (const key of redisKeys) found += await redis.exists(key);
    return found;
  }

  for (const [what, openid] of ODD_OPENIDS) {
    it(`answers -1 to an openid with ${what} on every route, and changes nothing`, async () => {
      for (const [route, body] of ROUTES) {
        const res = await svc.call(route, body(openid));
        expect(res.status, route).to.equal(200);
        expect(res.body.code, route).to.equal(-1);
        expect(res.body.msg, route).to.match(/openid/);
      }
      expect(await traces(openid)).to.equal(0);
    });
  }

  it('answers -1 to an openid that is not a string', async () => {
    for (const openid of [123, null, ['a'], { a: 1 }, true]) {
      for (const [route, body] of ROUTES) {
        expect((await svc.call(route, { ...body('x'), openid })).body.code, `${route} ${openid}`).to.equal(-1);
      }
    }
  });

  it('takes every character of the alphabet, 1 to 64 of them, case-sensitive', async () => {
    const base = newOpenid('Az09');
    const long = `${base}_-${'aZ'.repeat(32)}`.slice(0, 64);
    for (const openid of [long, long.toUpperCase(), `${base}-x_Y`]) {
      const login = await svc.call('login', loginBody(openid, { nick_name: openid.slice(-4) }));
      expect(login.body.code, openid).to.equal(0);
      expect(login.body.data.openid).to.equal(openid);
      expect((await svc.call('get', { openid })).body.data.nick_name).to.equal(openid.slice(-4));
      expect((await svc.call('loginByOpenid', { openid })).body.code).to.equal(0);
      expect((await svc.call('logout', { openid })).body.code).to.equal(0);
    }
  });

  describe("WeChat's jscode2session answer", () => {
    const openid = newOpenid('wx');
    const bad: [string, WechatReply][] = [
      ['null', { raw: 'null' }],
      ['HTML', { raw: '<html><body>502 Bad Gateway</body></html>' }],
      ['an empty array', { body: [] }],
      ['an array of an answer', { body: [{ openid, session_key: 'sk' }] }],
      ['a number', { body: 42 }],
      ['a string', { raw: '"openid"' }],
      ['true', { raw: 'true' }],
      ['an empty object', { body: {} }],
      ['an openid with a brace', { body: { openid: '}abc', session_key: 'sk' } }],
      ['an openid with a space', { body: { openid: 'a b', session_key: 'sk' } }],
      ['an openid of 65 characters', { body: { openid: 'o'.repeat(65), session_key: 'sk' } }],
      ['an empty openid', { body: { openid: '', session_key: 'sk' } }],
      ['a numeric openid', { body: { openid: 12345, session_key: 'sk' } }],
      ['no session_key', { body: { openid } }],
      ['a session_key that is not a string', { body: { openid, session_key: { a: 1 } } }],
      ['a session_key of 257 characters', { body: { openid, session_key: 'k'.repeat(257) } }],
      ['an invalid unionid', { body: { openid, session_key: 'sk', unionid: '{u}' } }],
      ['an errcode that is not a number', { body: { errcode: 'x', errmsg: 'y' } }],
      ['17 KiB', { body: { openid, session_key: 'sk', pad: 'x'.repeat(17 * 1024) } }],
    ];

    for (const [what, reply] of bad) {
      it(`answers -2 to ${what}, with one warn line and no stack, storing nothing`, async () => {
        const code = `bad-${what.replace(/\W+/g, '-')}`;
        wechat.on(code, reply);
        const before = logs.lines.length;
        const res = await svc.call('getOpenid', { js_code: code });
        expect(res.body.code).to.equal(-2);
        expect(res.body.msg).to.match(/^wechat: /);
        expect(res.body.data).to.equal(null);

        const lines = logs.lines.slice(before).map((l) => JSON.parse(l));
        expect(lines, JSON.stringify(lines)).to.have.length(1);
        expect(lines[0]).to.include({ level: 40, msg: 'unusable WeChat answer' });
        expect(logs.lines.slice(before).join('')).to.not.match(/stack|TypeError|\bat \S+ \(/);
        expect(logs.lines.slice(before).join('')).to.not.include('sk');
        expect(await traces(openid)).to.equal(0);
      });
    }

    it('logs no warn line for a refusal (an errcode), nor for a good answer', async () => {
      wechat.on('refused', { body: { errcode: 40029, errmsg: 'invalid code' } });
      wechat.on('good', { body: { openid, session_key: 'sk', unionid: 'u_1-A' } });
      const before = logs.lines.length;
      expect((await svc.call('getOpenid', { js_code: 'refused' })).body.code).to.equal(-2);
      const good = await svc.call('getOpenid', { js_code: 'good' });
      expect(good.body.data).to.include({ openid, unionid: 'u_1-A' });
      expect(logs.lines.slice(before)).to.deep.equal([]);
      await svc.call('logout', { openid });
    });
  });
});
