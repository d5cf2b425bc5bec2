import { expect } from 'chai';
import type { Knex } from 'knex';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type { RedisClient } from '../../src/redis/client';
import { newOpenid, testConfig } from '../helpers/env';
import { FakeWechat, WechatPusher, type Suggest } from '../helpers/fake-wechat';
import { loginBody } from '../helpers/http';
import { scrape } from '../helpers/metrics';
import { LogCapture, startService, type TestService } from '../helpers/service';
import { testDb, testRedis } from '../helpers/stores';
import { eventually } from '../helpers/wait';

const TOKEN = 'contentPush42';
const APPID = 'wx-content';
const PUBLIC_BASE_URL = 'https://cdn.content.test';
const REFUSED = "内容安全检测未通过 / refused by WeChat's content check";

describe("WeChat's content check of nicknames and avatars", function () {
  this.timeout(30_000);
  let wechat: FakeWechat;
  let svc: TestService;
  let pusher: WechatPusher;
  let db: Knex;
  let redis: RedisClient;
  const logs = new LogCapture();
  const started: TestService[] = [];
  const prefix = testConfig().redis.keyPrefix;
  const mediaDir = testConfig().media.dir;
  let n = 0;
  /** A nickname no test has used: the verdict cache is shared by the run. */
  const nick = (what = '名') => `${what}${process.pid}-${++n}-${Date.now() % 100000}`;

  async function start(overrides: Record<string, string | number> = {}, logTo?: LogCapture): Promise<TestService> {
    const s = await startService(
      {
        WECHAT_API_BASE: wechat.url,
        WECHAT_APPID: APPID,
        WECHAT_SECRET: 's',
        CONTENT_CHECK: 'on',
        WECHAT_PUSH_TOKEN: TOKEN,
        PUBLIC_BASE_URL,
        ...overrides,
      },
      logTo,
    );
    started.push(s);
    return s;
  }

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await start({ LOG_LEVEL: 'info' }, logs);
    pusher = new WechatPusher(svc.url, TOKEN, APPID);
    db = testDb();
    redis = testRedis();
  });
  afterEach(() => {
    wechat.contentFailure = undefined;
  });
  after(async () => {
    for (const s of started) await s.stop();
    await wechat.stop();
    await db.destroy();
    redis.disconnect();
  });

  async function registered(fields = {}): Promise<{ openid: string; token: string; user_id: number }> {
    const openid = newOpenid('cc');
    const avatar = `https://example.com/u-${openid}.png`;
    const res = await svc.call('login', loginBody(openid, { nick_name: nick(), avatar, ...fields }));
    expect(res.body.code, res.body.msg).to.equal(0);
    return { openid, token: res.body.data.token, user_id: res.body.data.user_id };
  }

  const row = async (openid: string) => (await db('users').where({ openid }))[0];
  const fileOf = (url: string) => join(mediaDir, url.slice(`${PUBLIC_BASE_URL}/media/`.length));

  async function upload(token: string, color = '#3a3'): Promise<string> {
    const image = await sharp({ create: { width: 32, height: 32, channels: 3, background: color } })
      .png()
      .toBuffer();
    const form = new FormData();
    form.append('file', new Blob([image], { type: 'image/png' }), 'a.png');
    const res = await fetch(`${svc.url}/service/user/avatar`, {
      method: 'POST',
      body: form,
      headers: { authorization: `Bearer ${token}` },
    });
    const body = (await res.json()) as { code: number; msg: string; data: { avatar: string } };
    expect(body.code, body.msg).to.equal(0);
    return body.data.avatar;
  }

  /** The trace_id WeChat gave for an image URL, once the service has stored it. */
  async function traceOf(url: string): Promise<string> {
    let traceId = '';
    await eventually(
      async () => {
        traceId = wechat.mediaCalls.find((c) => c.body.media_url === url)?.traceId ?? '';
        return traceId !== '' && (await redis.exists(`${prefix}content:media:${traceId}`)) === 1;
      },
      5000,
      20,
    );
    return traceId;
  }

  async function verdict(traceId: string, suggest: Suggest): Promise<void> {
    const res = await pusher.mediaVerdict(traceId, suggest);
    expect(res, res.text).to.deep.equal({ status: 200, text: 'success' });
  }

  const avatarOf = async (openid: string) => (await svc.call('get', { openid })).body.data.avatar as string;

  describe('nicknames (msgSecCheck v2)', () => {
    it('a risky nickname is -11: login writes no row, update leaves the user unchanged', async () => {
      const bad = nick('坏');
      wechat.textVerdicts.set(bad, 'risky');
      const openid = newOpenid('cc');
      const calls = wechat.textCalls.length;
      const res = await svc.call('login', loginBody(openid, { nick_name: bad }));
      expect(res.body).to.deep.equal({ code: -11, msg: REFUSED, data: null });
      expect(await db('users').where({ openid })).to.deep.equal([]);
      const call = wechat.textCalls[calls]!;
      expect(call.body).to.deep.equal({ content: bad, version: 2, scene: 1, openid });

      const u = await registered();
      const before = await row(u.openid);
      for (const update of [{ nick_name: bad }, JSON.stringify({ nick_name: bad, gender: 0 })]) {
        const upd = await svc.call('update', { user_id: u.user_id, update });
        expect(upd.body).to.deep.equal({ code: -11, msg: REFUSED, data: null });
      }
      expect(await row(u.openid)).to.deep.equal(before);
      expect((await svc.call('get', { openid: u.openid })).body.data.nick_name).to.equal(before.nick_name);
    });

    it('review is stored (and counted); CONTENT_REVIEW=refuse makes it -11', async () => {
      const doubtful = nick('疑');
      wechat.textVerdicts.set(doubtful, 'review');
      const u = await registered({ nick_name: doubtful });
      expect((await row(u.openid)).nick_name).to.equal(doubtful);
      const other = await registered();
      expect(
        (await svc.call('update', { user_id: other.user_id, update: { nick_name: doubtful } })).body.code,
      ).to.equal(0);
      expect((await row(other.openid)).nick_name).to.equal(doubtful);
      const m = await scrape(svc.opsUrl);
      expect(m.value('user_service_content_checks_total', { kind: 'text', verdict: 'review' })).to.equal(2);

      const strict = await start({ CONTENT_REVIEW: 'refuse' });
      const openid = newOpenid('cc');
      const res = await strict.call('login', loginBody(openid, { nick_name: nick('疑2') }));
      expect(res.body.code).to.equal(0); // pass is still stored
      const doubtful2 = nick('疑');
      wechat.textVerdicts.set(doubtful2, 'review');
      const refused = await strict.call('login', loginBody(newOpenid('cc'), { nick_name: doubtful2 }));
      expect(refused.body.code).to.equal(-11);
      const upd = await strict.call('update', { user_id: res.body.data.user_id, update: { nick_name: doubtful2 } });
      expect(upd.body.code).to.equal(-11);
      expect((await row(openid)).nick_name).to.not.equal(doubtful2);
    });

    it('a nickname already judged costs no call (cached by its SHA-256), for login and update alike', async () => {
      const name = nick('同');
      const calls = wechat.textCalls.length;
      await registered({ nick_name: name });
      const u = await registered({ nick_name: name });
      await svc.call('update', { user_id: u.user_id, update: { nick_name: name, gender: 0 } });
      expect(wechat.textCalls.length - calls).to.equal(1);
      const [key] = await redis.keys(`${prefix}content:text:*`);
      expect(key).to.match(/content:text:[0-9a-f]{64}$/);
      expect(await redis.ttl(key!)).to.be.within(1, 86_400);

      const risky = nick('坏');
      wechat.textVerdicts.set(risky, 'risky');
      for (let i = 0; i < 3; i++) {
        expect((await svc.call('login', loginBody(newOpenid('cc'), { nick_name: risky }))).body.code).to.equal(-11);
      }
      expect(wechat.textCalls.length - calls).to.equal(2);
    });

    it('a login of an existing user, and the cached loginByOpenid, make no content call', async () => {
      const u = await registered();
      await traceOf(`https://example.com/u-${u.openid}.png`);
      const [texts, mediaBefore] = [wechat.textCalls.length, wechat.mediaCalls.length];
      expect((await svc.call('login', loginBody(u.openid, { nick_name: nick('另') }))).body.code).to.equal(0);
      for (let i = 0; i < 5; i++) {
        expect((await svc.call('loginByOpenid', { openid: u.openid })).body.code).to.equal(0);
      }
      await new Promise((r) => setTimeout(r, 50));
      expect(wechat.textCalls.length).to.equal(texts);
      expect(wechat.mediaCalls.length).to.equal(mediaBefore);
    });

    it('WeChat failing: open (the default) stores, counts and warns once; closed is -2 with nothing stored', async () => {
      for (const failure of ['errcode', 'http500', 'hang'] as const) {
        wechat.contentFailure = failure;
        const openid = newOpenid('cc');
        const warnings = logs.lines.filter((l) => l.includes('nickname stored unchecked')).length;
        const res = await svc.call('login', loginBody(openid, { nick_name: nick('断') }));
        expect(res.body.code, `${failure}: ${res.body.msg}`).to.equal(0);
        expect(await row(openid)).to.not.equal(undefined);
        expect(logs.lines.filter((l) => l.includes('nickname stored unchecked')).length, failure).to.equal(
          warnings + 1,
        );
      }
      const m = await scrape(svc.opsUrl);
      expect(m.value('user_service_content_checks_total', { kind: 'text', verdict: 'error' })).to.be.at.least(3);

      const closed = await start({ CONTENT_CHECK_FAILURE: 'closed' });
      wechat.contentFailure = 'errcode';
      const openid = newOpenid('cc');
      const res = await closed.call('login', loginBody(openid, { nick_name: nick('断') }));
      expect(res.body.code).to.equal(-2);
      expect(await db('users').where({ openid })).to.deep.equal([]);
      const u = await registered();
      const before = await row(u.openid);
      const upd = await closed.call('update', { user_id: u.user_id, update: { nick_name: nick('断') } });
      expect(upd.body.code).to.equal(-2);
      expect(await row(u.openid)).to.deep.equal(before);
    });

    it('a rejected access token (40001) is refreshed once and the check made again', async () => {
      await registered();
      wechat.revoke();
      const tokens = wechat.tokenCalls.length;
      const openid = newOpenid('cc');
      const bad = nick('坏');
      wechat.textVerdicts.set(bad, 'risky');
      expect((await svc.call('login', loginBody(openid, { nick_name: bad }))).body.code).to.equal(-11);
      expect(wechat.tokenCalls.length).to.equal(tokens + 1);
    });
  });

  describe('hygiene, in every mode, before any call', () => {
    const refused: [string, string][] = [
      ['blank', '   '],
      ['ideographic space and tab', '\u3000\t'],
      ['right-to-left override', 'abc\u202edef'],
      ['left-to-right embedding', '\u202aabc'],
      ['pop directional formatting', 'abc\u202c'],
      ['first strong isolate', 'a\u2068b'],
      ['pop directional isolate', 'a\u2069'],
      ['zero-width space', 'a\u200bb'],
      ['byte-order mark', '\ufeffab'],
    ];

    it('refuses each with -1 on login and update (object and JSON string), writing nothing and asking nobody', async () => {
      const off = await start({ CONTENT_CHECK: 'off' });
      const u = await registered();
      const before = await row(u.openid);
      const calls = wechat.textCalls.length;
      for (const service of [svc, off]) {
        for (const [what, name] of refused) {
          const openid = newOpenid('cc');
          const login = await service.call('login', loginBody(openid, { nick_name: name }));
          expect(login.body.code, `login: ${what}`).to.equal(-1);
          expect(await db('users').where({ openid }), what).to.deep.equal([]);
          for (const update of [{ nick_name: name }, JSON.stringify({ nick_name: name })]) {
            const res = await service.call('update', { user_id: u.user_id, update });
            expect(res.body.code, `update: ${what}`).to.equal(-1);
          }
        }
      }
      expect(wechat.textCalls.length).to.equal(calls);
      expect(await row(u.openid)).to.deep.equal(before);
    });

    it('accepts emoji joined by U+200D (and checks them with WeChat)', async () => {
      const family = `👨\u200d👩\u200d👧${++n}`;
      const calls = wechat.textCalls.length;
      const u = await registered({ nick_name: family });
      expect((await row(u.openid)).nick_name).to.equal(family);
      expect(wechat.textCalls.length).to.equal(calls + 1);
      const other = `🏳️\u200d🌈${++n}`;
      expect((await svc.call('update', { user_id: u.user_id, update: { nick_name: other } })).body.code).to.equal(0);
      expect((await row(u.openid)).nick_name).to.equal(other);
    });

    it('API answers carry X-Content-Type-Options: nosniff, errors included', async () => {
      for (const [route, body] of [
        ['get', { openid: 'x y' }],
        ['loginByOpenid', { openid: newOpenid('cc') }],
        ['login', loginBody(newOpenid('cc'), { nick_name: '<img src=x onerror=alert(1)>' })],
      ] as const) {
        const res = await svc.call(route, body);
        expect(res.headers.get('x-content-type-options'), route).to.equal('nosniff');
      }
    });
  });

  describe('avatars (mediaCheckAsync v2, verdict by the message push)', () => {
    it('an upload answers at once and asks WeChat about its public URL; a risky verdict clears the avatar and removes the file', async () => {
      const u = await registered();
      const url = await upload(u.token);
      expect(url.startsWith(`${PUBLIC_BASE_URL}/media/avatar/${u.user_id}_`)).to.equal(true);
      const traceId = await traceOf(url);
      const call = wechat.mediaCalls.find((c) => c.traceId === traceId)!;
      expect(call.body).to.deep.equal({ media_url: url, media_type: 2, version: 2, scene: 1, openid: u.openid });
      expect(existsSync(fileOf(url))).to.equal(true);
      const mtime = (await row(u.openid)).mtime;

      await verdict(traceId, 'risky');
      expect(await avatarOf(u.openid)).to.equal('');
      expect((await row(u.openid)).avatar).to.equal('');
      expect(existsSync(fileOf(url))).to.equal(false);
      // A repeated push changes nothing more.
      const after = await row(u.openid);
      expect(after.mtime).to.not.deep.equal(mtime);
      await verdict(traceId, 'risky');
      expect(await row(u.openid)).to.deep.equal(after);
      const m = await scrape(svc.opsUrl);
      expect(m.value('user_service_content_checks_total', { kind: 'image', verdict: 'risky' })).to.be.at.least(2);
    });

    it('pass keeps the avatar (XML push too)', async () => {
      const u = await registered();
      const url = await upload(u.token);
      const traceId = await traceOf(url);
      const before = await row(u.openid);
      const res = await pusher.mediaVerdict(traceId, 'pass', { format: 'xml' });
      expect(res.text).to.equal('success');
      expect(await avatarOf(u.openid)).to.equal(url);
      expect(await row(u.openid)).to.deep.equal(before);
      expect(existsSync(fileOf(url))).to.equal(true);
    });

    it('a verdict on an image already replaced removes only that old file', async () => {
      const u = await registered();
      const first = await upload(u.token, '#a11');
      const firstTrace = await traceOf(first);
      const firstBytes = readFileSync(fileOf(first));
      const second = await upload(u.token, '#1a1');
      // The replacement released the first file; as if that removal had failed, it is back.
      writeFileSync(fileOf(first), firstBytes);
      const before = await row(u.openid);

      await verdict(firstTrace, 'risky');
      expect(existsSync(fileOf(first))).to.equal(false);
      expect(existsSync(fileOf(second))).to.equal(true);
      expect(await row(u.openid)).to.deep.equal(before);
      expect(await avatarOf(u.openid)).to.equal(second);
      // Replaced by a URL elsewhere: the verdict on the second upload leaves that URL alone.
      const elsewhere = `https://example.com/elsewhere-${u.user_id}.png`;
      expect((await svc.call('update', { user_id: u.user_id, update: { avatar: elsewhere } })).body.code).to.equal(0);
      await verdict(await traceOf(second), 'risky');
      expect(await avatarOf(u.openid)).to.equal(elsewhere);
    });

    it('a verdict racing a replacement clears only the image it judged', async () => {
      const u = await registered();
      const judged = await upload(u.token);
      const traceId = await traceOf(judged);
      const replacement = `https://example.com/raced-${u.user_id}.png`;
      // Hold the row while the verdict is on its way, and replace the avatar before letting go:
      // whatever the verdict read before the lock, it must not clear the replacement.
      const trx = await db.transaction();
      try {
        await trx.raw('SELECT id FROM users WHERE id = ? FOR UPDATE', [u.user_id]);
        const pushed = pusher.mediaVerdict(traceId, 'risky');
        // Waiting for the row: a locking read of another connection, still running.
        await eventually(
          async () => {
            const [rows] = (await db.raw(
              'SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST ' +
                "WHERE id <> CONNECTION_ID() AND command = 'Query' AND info LIKE '%FROM users WHERE id = % FOR UPDATE'",
            )) as [{ n: number }[]];
            return Number(rows[0].n) > 0;
          },
          5000,
          20,
        );
        await trx('users').where({ id: u.user_id }).update({ avatar: replacement });
        await trx.commit();
        expect((await pushed).text).to.equal('success');
      } finally {
        if (!trx.isCompleted()) await trx.rollback();
      }
      expect((await row(u.openid)).avatar).to.equal(replacement);
      expect(existsSync(fileOf(judged))).to.equal(false);
    });

    it("update's avatar URL and a first login's avatar are checked too; a risky verdict clears the URL", async () => {
      const openid = newOpenid('cc');
      const loginUrl = `https://example.com/login-${openid}.png`;
      const res = await svc.call('login', loginBody(openid, { nick_name: nick(), avatar: loginUrl }));
      expect(res.body.code).to.equal(0);
      await traceOf(loginUrl);
      const url = `https://example.com/set-${openid}.png`;
      expect(
        (await svc.call('update', { user_id: res.body.data.user_id, update: { avatar: url } })).body.code,
      ).to.equal(0);
      await verdict(await traceOf(url), 'risky');
      expect(await avatarOf(openid)).to.equal('');
    });

    it('a verdict for an unknown trace_id is logged and answered success; one without a trace_id is 400', async () => {
      const res = await pusher.mediaVerdict('no-such-trace', 'risky');
      expect(res.text).to.equal('success');
      await eventually(() => logs.text.includes('unknown trace_id'), 2000, 20);
      const bad = await pusher.push({ Event: 'wxa_media_check', result: { suggest: 'risky' } });
      expect(bad.status).to.equal(400);
    });
  });
});
