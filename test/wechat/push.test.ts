import { expect } from 'chai';
import type { Knex } from 'knex';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { readSession } from 'wechat-user-sessions';
import type { RedisClient } from '../../src/redis/client';
import { newOpenid, testConfig } from '../helpers/env';
import { WechatPusher } from '../helpers/fake-wechat';
import { loginBody } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';
import { testDb, testRedis } from '../helpers/stores';

const TOKEN = 'pushToken42';
const APPID = 'wx-test-appid';
const aesKey = () => randomBytes(32).toString('base64').slice(0, 43);
const KEY = aesKey();
const PREVIOUS = aesKey();
const PUBLIC_BASE_URL = 'https://cdn.example.test';

type Mode = { format: 'json' | 'xml'; secure: boolean };
const MODES: Mode[] = [
  { format: 'json', secure: false },
  { format: 'xml', secure: false },
  { format: 'json', secure: true },
  { format: 'xml', secure: true },
];
const label = (m: Mode) => `${m.format}, ${m.secure ? 'secure' : 'plain'}`;

describe("WeChat's message push (/wechat/push): authorization events", function () {
  this.timeout(30_000);
  let svc: TestService;
  let pusher: WechatPusher;
  let db: Knex;
  let redis: RedisClient;
  const logs = new LogCapture();
  const mediaDir = testConfig().media.dir;
  const prefix = testConfig().redis.keyPrefix;

  before(async () => {
    svc = await startService(
      {
        WECHAT_PUSH_TOKEN: TOKEN,
        WECHAT_PUSH_AES_KEY: KEY,
        WECHAT_PUSH_AES_KEY_PREVIOUS: PREVIOUS,
        WECHAT_APPID: APPID,
        PUBLIC_BASE_URL,
        LOG_LEVEL: 'info',
      },
      logs,
    );
    pusher = new WechatPusher(svc.url, TOKEN, APPID);
    db = testDb();
    redis = testRedis();
  });
  after(async () => {
    await svc.stop();
    await db.destroy();
    redis.disconnect();
  });

  const push = (fields: Record<string, string | number>, mode: Mode, extra = {}) =>
    pusher.push(fields, { format: mode.format, ...(mode.secure ? { aesKey: KEY } : {}), ...extra });

  async function user(fields = {}): Promise<{ openid: string; user_id: number; token: string }> {
    const openid = newOpenid('push');
    const res = await svc.call(
      'login',
      loginBody(openid, {
        nick_name: '昵称',
        avatar: 'https://thirdwx.qlogo.cn/x/132',
        phone: '13812345678',
        ...fields,
      }),
    );
    expect(res.body.code).to.equal(0);
    // warm the cache: a push must leave no stale read behind it
    expect((await svc.call('get', { openid })).body.code).to.equal(0);
    return { openid, user_id: res.body.data.user_id, token: res.body.data.token };
  }
  const read = async (openid: string) => (await svc.call('get', { openid })).body.data;
  const row = async (openid: string) => (await db('users').where({ openid }))[0];
  const refusals = () => logs.lines.filter((l) => l.includes('wechat push refused'));

  it('answers the URL check with echostr when signed, 401 when not or when stale', async () => {
    expect(await pusher.verify('echo-123')).to.deep.equal({ status: 200, text: 'echo-123' });
    const q = pusher.query();
    q.set('echostr', '<script>x</script>');
    const echoed = await fetch(`${svc.url}/wechat/push?${q}`);
    expect(echoed.headers.get('content-type')).to.match(/^text\/plain/);
    expect(echoed.headers.get('x-content-type-options')).to.equal('nosniff');
    expect((await pusher.verify('x', { token: 'forged' })).status).to.equal(401);
    expect((await pusher.verify('x', { timestamp: Math.floor(Date.now() / 1000) - 301 })).status).to.equal(401);
  });

  const REVOKES: [string, Record<string, string>][] = [
    ['6', { nick_name: '', avatar: '' }],
    ['8', { phone: '' }],
    ['19', { nick_name: '' }],
    ['20', { avatar: '' }],
  ];
  for (const [info, cleared] of REVOKES) {
    for (const mode of MODES) {
      it(`user_authorization_revoke ${info} (${label(mode)}) clears ${Object.keys(cleared).join(' and ')}, once`, async () => {
        const u = await user();
        // As answered: the row holds the phone sealed (docs/phone-encryption.md).
        const before = await read(u.openid);
        const event = {
          Event: 'user_authorization_revoke',
          OpenID: u.openid,
          RevokeInfo: mode.format === 'xml' ? info : Number(info),
        };
        expect(await push(event, mode)).to.deep.equal({ status: 200, text: 'success' });
        const after = await read(u.openid);
        expect(after).to.include(cleared);
        for (const field of ['nick_name', 'avatar', 'phone'].filter((f) => !(f in cleared))) {
          expect(after[field], field).to.equal(before[field]);
        }
        // WeChat repeats a push it saw unanswered: nothing more changes, not even mtime.
        const changed = await row(u.openid);
        expect(await push(event, mode)).to.deep.equal({ status: 200, text: 'success' });
        expect(await row(u.openid)).to.deep.equal(changed);
      });
    }
  }

  it('user_authorization_revoke 6 also removes the uploaded avatar file', async () => {
    const u = await user();
    const image = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#39c' } })
      .png()
      .toBuffer();
    const form = new FormData();
    form.append('file', new Blob([image], { type: 'image/png' }), 'a.png');
    const up = await fetch(`${svc.url}/service/user/avatar`, {
      method: 'POST',
      body: form,
      headers: { authorization: `Bearer ${u.token}` },
    });
    expect(((await up.json()) as { code: number }).code).to.equal(0);
    const files = () =>
      existsSync(join(mediaDir, 'avatar'))
        ? readdirSync(join(mediaDir, 'avatar')).filter((f) => f.startsWith(`${u.user_id}_`))
        : [];
    expect(files()).to.have.length(1);
    const res = await push({ Event: 'user_authorization_revoke', OpenID: u.openid, RevokeInfo: '6' }, MODES[2]!);
    expect(res.text).to.equal('success');
    expect(files()).to.deep.equal([]);
    expect((await read(u.openid)).avatar).to.equal('');
  });

  it('user_authorization_revoke with another RevokeInfo changes nothing', async () => {
    const u = await user();
    const before = await row(u.openid);
    for (const mode of MODES) {
      expect(
        (await push({ Event: 'user_authorization_revoke', OpenID: u.openid, RevokeInfo: '1' }, mode)).text,
      ).to.equal('success');
    }
    expect(await row(u.openid)).to.deep.equal(before);
  });

  for (const mode of MODES) {
    it(`user_info_modified (${label(mode)}) clears nick_name and avatar`, async () => {
      const u = await user();
      const res = await push({ Event: 'user_info_modified', OpenID: u.openid, Reason: 'risky' }, mode);
      expect(res).to.deep.equal({ status: 200, text: 'success' });
      expect(await read(u.openid)).to.include({ nick_name: '', avatar: '', phone: '13812345678' });
    });

    it(`user_authorization_cancellation (${label(mode)}) deletes the account, reason wechat_cancellation`, async () => {
      const u = await user();
      const event = { Event: 'user_authorization_cancellation', OpenID: u.openid };
      expect(await push(event, mode)).to.deep.equal({ status: 200, text: 'success' });
      expect(await row(u.openid)).to.equal(undefined);
      expect(await readSession(redis, u.token, { keyPrefix: prefix })).to.equal(null);
      expect((await svc.call('get', { openid: u.openid })).body.code).to.equal(-4);
      const records = await db('account_deletions').where({ user_id: u.user_id });
      expect(records.map((r) => r.reason)).to.deep.equal(['wechat_cancellation']);
      // repeated: still success, still one record
      expect(await push(event, mode)).to.deep.equal({ status: 200, text: 'success' });
      expect(await db('account_deletions').where({ user_id: u.user_id })).to.have.length(1);
    });
  }

  it('answers success to any other event, and for a user it does not know', async () => {
    const u = await user();
    const before = await row(u.openid);
    for (const mode of MODES) {
      expect((await push({ Event: 'wxa_something_new', OpenID: u.openid }, mode)).text).to.equal('success');
      expect((await push({ Event: 'user_info_modified', OpenID: newOpenid('nobody') }, mode)).text).to.equal('success');
    }
    expect(await row(u.openid)).to.deep.equal(before);
    expect(logs.text).to.include('wechat push ignored');
  });

  it('accepts a message sealed with WECHAT_PUSH_AES_KEY_PREVIOUS (a key rotation)', async () => {
    const u = await user();
    for (const format of ['json', 'xml'] as const) {
      const res = await pusher.push(
        { Event: 'user_authorization_revoke', OpenID: u.openid, RevokeInfo: '8' },
        { format, aesKey: PREVIOUS },
      );
      expect(res).to.deep.equal({ status: 200, text: 'success' });
    }
    expect((await read(u.openid)).phone).to.equal('');
  });

  describe('refusals change nothing and log one warn line without the body', () => {
    const cases: [string, number, (openid: string, mode: Mode) => Promise<{ status: number }>][] = [
      ['a bad signature', 401, (openid, mode) => push(revoke(openid), mode, { token: 'forgedToken' })],
      [
        'a timestamp 6 minutes old',
        401,
        (openid, mode) => push(revoke(openid), mode, { timestamp: Math.floor(Date.now() / 1000) - 360 }),
      ],
      [
        'a timestamp 6 minutes ahead',
        401,
        (openid, mode) => push(revoke(openid), mode, { timestamp: Math.floor(Date.now() / 1000) + 360 }),
      ],
      [
        'a wrong appid',
        400,
        (openid, mode) => push(revoke(openid), mode, mode.secure ? { appid: 'wx-someone-else' } : {}).then((r) => r),
      ],
      [
        'an unknown AES key',
        400,
        (openid, mode) => pusher.push(revoke(openid), { format: mode.format, aesKey: aesKey() }),
      ],
      ['a body over 64 KiB', 413, (openid, mode) => push(revoke(openid), mode, { rawBody: big(mode) })],
    ];
    const revoke = (openid: string) => ({
      Event: 'user_authorization_revoke',
      OpenID: openid,
      RevokeInfo: '8',
      Marker: 'BODY-MARKER',
    });
    const big = (mode: Mode) =>
      mode.format === 'json'
        ? JSON.stringify({ Encrypt: 'A'.repeat(64 * 1024), Marker: 'BODY-MARKER' })
        : `<xml><Marker>BODY-MARKER</Marker><Encrypt>${'A'.repeat(64 * 1024)}</Encrypt></xml>`;

    for (const [what, status, send] of cases) {
      it(`${what}: ${status}`, async () => {
        const u = await user();
        const before = await row(u.openid);
        for (const mode of MODES) {
          if (what === 'a wrong appid' && !mode.secure) {
            // the plain message names its AppID too
            const res = await pusher.push({ ...revoke(u.openid), AppID: 'wx-someone-else' }, { format: mode.format });
            expect(res.status, label(mode)).to.equal(400);
            continue;
          }
          const n = refusals().length;
          const res = await send(u.openid, mode);
          expect(res.status, label(mode)).to.equal(status);
          expect(refusals().length - n, label(mode)).to.equal(1);
        }
        expect(await row(u.openid)).to.deep.equal(before);
        expect(logs.text).to.not.include('BODY-MARKER');
        expect(logs.text).to.not.include(u.openid);
      });
    }

    it('checks the signature before reading the body, and msg_signature before decrypting', async () => {
      // A forged push with a body that is too big and would not parse: the signature speaks first.
      const q = pusher.query({ token: 'forged' });
      expect((await pusher.send(q, 'x'.repeat(200 * 1024))).status).to.equal(401);
      // Signed query, secure mode, a body whose Encrypt does not decrypt and whose msg_signature is wrong.
      const secure = pusher.query({}, 'not-the-same');
      secure.set('encrypt_type', 'aes');
      expect((await pusher.send(secure, JSON.stringify({ Encrypt: 'AAAA' }))).status).to.equal(401);
      // The same body, rightly signed, is undecryptable: 400.
      expect((await pusher.send(pusher.query({}, 'AAAA'), JSON.stringify({ Encrypt: 'AAAA' }))).status).to.equal(400);
      expect((await pusher.send(pusher.query(), '{not json')).status).to.equal(400);
      expect(
        (await pusher.send(pusher.query(), '<!DOCTYPE x [<!ENTITY a "b">]><xml><a>&a;</a></xml>', 'xml')).status,
      ).to.equal(400);
    });

    it('a flood of forged pushes is refused, each with one warn line, and changes nothing', async () => {
      const u = await user();
      const before = await row(u.openid);
      const n = refusals().length;
      const forged = Array.from({ length: 200 }, () =>
        pusher.send(pusher.query({ token: 'forged' }), JSON.stringify(revoke(u.openid)) + ' '.repeat(60 * 1024)),
      );
      const statuses = new Set((await Promise.all(forged)).map((r) => r.status));
      expect([...statuses]).to.deep.equal([401]);
      expect(refusals().length - n).to.equal(200);
      expect(await row(u.openid)).to.deep.equal(before);
    });
  });
});

describe('/wechat/push and the per-IP limit', () => {
  it('is not limited per IP (WeChat pushes from few addresses), nor spends a client budget', async () => {
    // Its own key prefix (inside the run's): the run's other services share 127.0.0.1's budget.
    const svc = await startService({
      WECHAT_PUSH_TOKEN: TOKEN,
      RATE_LIMIT_IP: 2,
      RATE_LIMIT_OPENID: 0,
      REDIS_KEY_PREFIX: `${testConfig().redis.keyPrefix}push-rl:`,
    });
    try {
      const pusher = new WechatPusher(svc.url, TOKEN, APPID);
      for (let i = 0; i < 10; i++) {
        expect(
          (await pusher.push({ Event: 'wxa_other', OpenID: 'o1' }, { format: i % 2 ? 'xml' : 'json' })).status,
        ).to.equal(200);
      }
      expect((await svc.call('get', { openid: 'o1' })).body.code).to.equal(-4);
    } finally {
      await svc.stop();
    }
  });
});

describe('/wechat/push without WECHAT_PUSH_TOKEN', () => {
  it('is off: 404 for GET and POST', async () => {
    const svc = await startService({ WECHAT_PUSH_TOKEN: '' });
    try {
      const pusher = new WechatPusher(svc.url, 'whatever', APPID);
      expect((await pusher.verify('x')).status).to.equal(404);
      expect((await pusher.push({ Event: 'user_info_modified', OpenID: 'o1' })).status).to.equal(404);
    } finally {
      await svc.stop();
    }
  });
});
