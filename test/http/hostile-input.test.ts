import { expect } from 'chai';
import { userPart } from '../helpers/http';
import type { Knex } from 'knex';
import { gzipSync } from 'node:zlib';
import { newOpenid } from '../helpers/env';
import { freePort } from '../helpers/redis-server';
import { startService, type TestService } from '../helpers/service';
import { testDb } from '../helpers/stores';

/** One hostile request and the answer it must get. */
interface Case {
  name: string;
  route: string;
  code: number;
  status?: number;
  body?: unknown;
  raw?: string | Buffer;
  contentType?: string;
  headers?: Record<string, string>;
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');
const bytes = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? utf8(p) : Buffer.from(p))));
const nested = (depth: number, leaf = '1') => '['.repeat(depth) + leaf + ']'.repeat(depth);
const nestedObject = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);

// Wrong types for each kind of field. Digit strings for numbers are accepted by design (forms
// carry nothing else), so they are not here; see the last test.
const NOT_STRINGS: unknown[] = [123, 1.5, 0, true, false, null, [], ['a'], {}, { $ne: '' }];
const NOT_NUMBERS: unknown[] = ['abc', '', '1abc', '0x1', '1,0', true, null, [], [1], {}, { $gt: 0 }, 1.5];

describe('hostile input', function () {
  this.timeout(60_000);
  let svc: TestService;
  let db: Knex;
  let user: { user_id: number; openid: string; [k: string]: unknown };

  const fresh = () => ({
    openid: newOpenid('hostile'),
    nick_name: 'n',
    avatar: 'https://example.com/a.png',
    gender: 1,
    phone: '1',
  });
  /** The whole users table, hashed: any insert, update or delete changes it. */
  const fingerprint = async () => {
    const [rows] = await db.raw(
      "SELECT COUNT(*) AS n, COALESCE(SUM(CRC32(CONCAT_WS('|', id, openid, nick_name, avatar, gender, phone, version, mtime))), 0) AS h FROM users",
    );
    return `${rows[0].n}:${rows[0].h}`;
  };

  before(async () => {
    // getOpenid must never reach WeChat here: nothing listens at this port.
    svc = await startService({ WECHAT_API_BASE: `http://127.0.0.1:${await freePort()}` });
    db = testDb();
    user = userPart((await svc.call('login', fresh())).body.data) as typeof user;
  });
  after(async () => {
    await db.destroy();
    await svc.stop();
  });

  async function check(c: Case): Promise<void> {
    const headers: Record<string, string> = { ...c.headers };
    let payload: string | Buffer;
    if (c.raw !== undefined) {
      payload = c.raw;
      if (c.contentType !== '') headers['content-type'] = c.contentType ?? 'application/json';
    } else {
      payload = JSON.stringify(c.body);
      headers['content-type'] = 'application/json';
    }
    const res = await fetch(`${svc.url}/service/user/${c.route}`, { method: 'POST', headers, body: payload });
    const text = await res.text();
    const label = `${c.route}: ${c.name}`;
    expect(res.status, label).to.equal(c.status ?? 200);
    expect(res.headers.get('content-type'), label).to.match(/^application\/json/);
    expect(text, label).to.not.match(/\bat .*\.(ts|js):\d+|Error:|node_modules/);
    const body = JSON.parse(text);
    expect(body.code, `${label}: ${body.msg}`).to.equal(c.code);
    expect(body.data, label).to.equal(null);
  }

  async function run(cases: Case[]): Promise<void> {
    const before = await fingerprint();
    for (const c of cases) {
      await check(c);
      expect(await fingerprint(), `${c.route}: ${c.name} changed the database`).to.equal(before);
    }
    // The user the update cases aimed at is untouched, in MySQL and in what is served.
    expect((await svc.call('get', { openid: user.openid })).body.data).to.deep.equal(user);
  }

  it('deep JSON: nested arrays and objects, in the body, in a field, inside update', async () => {
    await run([
      // As deep as BODY_LIMIT (16 KiB) allows; deeper is too large before it is parsed.
      { name: '8k nested arrays as the body', route: 'get', code: -1, raw: nested(8000) },
      { name: '100k nested arrays as the body', route: 'get', code: 413, status: 413, raw: nested(100_000) },
      { name: 'openid 8k arrays deep', route: 'get', code: -1, raw: `{"openid":${nested(8000, '"x"')}}` },
      {
        name: 'nick_name 8k arrays deep',
        route: 'login',
        code: -1,
        body: { ...fresh(), nick_name: undefined },
        raw: `{"nick_name":${nested(8000)}}`,
      },
      {
        name: 'update 2.5k objects deep',
        route: 'update',
        code: -4,
        raw: `{"user_id":${user.user_id},"update":${nestedObject(2500)}}`,
      },
      {
        name: 'update as a string of 1.5k objects',
        route: 'update',
        code: -4,
        body: { user_id: user.user_id, update: nestedObject(1500) },
      },
    ]);
  });

  it('huge bodies: over the limit, a gzip bomb, 60k keys, 5k form fields, deep form brackets', async () => {
    const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    const many = keys(60_000);
    const fields = (n: number) => Array.from({ length: n }, (_, i) => `f${i}=1`).join('&');
    await run([
      {
        name: '2 MB of JSON',
        route: 'login',
        code: 413,
        status: 413,
        raw: JSON.stringify({ ...fresh(), pad: 'x'.repeat(2 << 20) }),
      },
      {
        name: '64 MB of zeros in 64 kB of gzip',
        route: 'login',
        code: 413,
        status: 413,
        raw: gzipSync(Buffer.concat([utf8('{"pad":"'), Buffer.alloc(64 << 20, 0x30), utf8('"}')])),
        headers: { 'content-encoding': 'gzip' },
      },
      { name: '60k unknown keys', route: 'get', code: 413, status: 413, body: { ...many, openid: newOpenid() } },
      {
        name: '1k unknown keys, fields missing',
        route: 'login',
        code: -1,
        body: { ...keys(1000), openid: newOpenid() },
      },
      {
        name: '1k unknown keys and a valid openid',
        route: 'get',
        code: -4,
        body: { ...keys(1000), openid: newOpenid() },
      },
      {
        name: '5000 form fields',
        route: 'login',
        code: 413,
        status: 413,
        raw: `${fields(5000)}&${new URLSearchParams(fresh() as never)}`,
        contentType: 'application/x-www-form-urlencoded',
      },
      {
        name: '1000 form fields before the openid',
        route: 'login',
        code: -1,
        raw: `${fields(1000)}&${new URLSearchParams(fresh() as never)}`,
        contentType: 'application/x-www-form-urlencoded',
      },
      {
        name: 'form brackets 6 deep',
        route: 'get',
        code: -1,
        raw: 'openid[a][b][c][d][e][f]=x',
        contentType: 'application/x-www-form-urlencoded',
      },
      {
        name: 'form array',
        route: 'get',
        code: -1,
        raw: 'openid=a&openid=b',
        contentType: 'application/x-www-form-urlencoded',
      },
    ]);
  });

  it('wrong content types', async () => {
    const json = JSON.stringify(fresh());
    const form = new URLSearchParams(fresh() as never).toString();
    await run([
      { name: 'text/plain', route: 'login', code: -1, raw: json, contentType: 'text/plain' },
      { name: 'application/xml', route: 'login', code: -1, raw: '<openid>x</openid>', contentType: 'application/xml' },
      { name: 'octet-stream', route: 'login', code: -1, raw: json, contentType: 'application/octet-stream' },
      { name: 'no content type', route: 'login', code: -1, raw: json, contentType: '' },
      {
        name: 'multipart',
        route: 'login',
        code: -1,
        raw: '--b\r\ncontent-disposition: form-data; name="openid"\r\n\r\nx\r\n--b--\r\n',
        contentType: 'multipart/form-data; boundary=b',
      },
      { name: 'a form labelled JSON', route: 'login', code: -1, raw: form, contentType: 'application/json' },
      {
        name: 'JSON labelled a form',
        route: 'login',
        code: -1,
        raw: json,
        contentType: 'application/x-www-form-urlencoded',
      },
      {
        name: 'UTF-16 JSON',
        route: 'login',
        code: -1,
        raw: Buffer.from(json, 'utf16le'),
        contentType: 'application/json; charset=utf-16le',
      },
      { name: 'empty JSON body', route: 'login', code: -1, raw: '', contentType: 'application/json' },
      { name: 'JSON null', route: 'login', code: -1, raw: 'null' },
      { name: 'JSON array of the fields', route: 'login', code: -1, raw: `[${json}]` },
    ]);
  });

  it('invalid UTF-8: stray, overlong, surrogate and truncated sequences, raw and percent-encoded', async () => {
    const profile = fresh();
    const jsonWith = (field: string, bad: number[]) => {
      const before = JSON.stringify({ ...profile, [field]: 'BAD' });
      const [head, tail] = before.split('BAD');
      return bytes(head, 'a', bad, 'b', tail);
    };
    const sequences: [string, number[]][] = [
      ['stray 0xff', [0xff]],
      ['continuation byte alone', [0x80]],
      ['overlong "/"', [0xc0, 0xaf]],
      ['UTF-8-encoded surrogate', [0xed, 0xa0, 0x80]],
      ['truncated 3-byte sequence', [0xe4, 0xb8]],
      ['beyond U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
    ];
    const cases: Case[] = [];
    for (const [name, seq] of sequences) {
      cases.push({ name: `openid: ${name}`, route: 'get', code: -1, raw: jsonWith('openid', seq) });
      cases.push({ name: `nick_name: ${name}`, route: 'login', code: -1, raw: jsonWith('nick_name', seq) });
      cases.push({ name: `phone: ${name}`, route: 'login', code: -1, raw: jsonWith('phone', seq) });
      cases.push({
        name: `update.nick_name: ${name}`,
        route: 'update',
        code: -4,
        raw: bytes(`{"user_id":${user.user_id},"update":{"nick_name":"a`, seq, 'b"}}'),
      });
      const form = new URLSearchParams({ ...profile, nick_name: 'BAD' } as never).toString().split('BAD');
      cases.push({
        name: `form, raw bytes: ${name}`,
        route: 'login',
        code: -1,
        raw: bytes(form[0], seq, form[1]),
        contentType: 'application/x-www-form-urlencoded',
      });
      cases.push({
        name: `form, percent-encoded: ${name}`,
        route: 'login',
        code: -1,
        raw: `${form[0]}${seq.map((b) => `%${b.toString(16).toUpperCase()}`).join('')}${form[1]}`,
        contentType: 'application/x-www-form-urlencoded',
      });
    }
    cases.push({
      name: 'lone surrogate as a JSON escape',
      route: 'login',
      code: -1,
      raw: JSON.stringify(profile).replace('"n"', '"\\ud800"'),
    });
    await run(cases);
  });

  it('NUL bytes, in values and in keys', async () => {
    const profile = fresh();
    await run([
      { name: 'openid with \\u0000', route: 'get', code: -1, body: { openid: 'a\u0000b' } },
      {
        name: 'openid with \\u0000',
        route: 'login',
        code: -1,
        body: { ...profile, openid: `${profile.openid}\u0000` },
      },
      { name: 'nick_name with \\u0000', route: 'login', code: -1, body: { ...profile, nick_name: '\u0000' } },
      { name: 'phone with \\u0000', route: 'login', code: -1, body: { ...profile, phone: '1\u00002' } },
      { name: 'js_code with \\u0000', route: 'getOpenid', code: -1, body: { js_code: 'a\u0000' } },
      { name: 'a raw NUL byte in a JSON string', route: 'get', code: -1, raw: bytes('{"openid":"a', [0], 'b"}') },
      {
        name: 'form %00',
        route: 'login',
        code: -1,
        raw: new URLSearchParams({ ...profile, nick_name: 'a\u0000' } as never).toString(),
        contentType: 'application/x-www-form-urlencoded',
      },
      { name: 'a key with \\u0000', route: 'get', code: -1, body: { 'open\u0000id': 'x' } },
      {
        name: 'update.phone with \\u0000',
        route: 'update',
        code: -4,
        body: { user_id: user.user_id, update: { phone: '\u0000' } },
      },
      {
        name: 'update as a string with \\u0000',
        route: 'update',
        code: -3,
        body: { user_id: user.user_id, update: '{"phone":"1"}\u0000' },
      },
    ]);
  });

  it('over-long values in every string field, and numbers out of range', async () => {
    const profile = fresh();
    await run([
      { name: 'openid of 65', route: 'get', code: -1, body: { openid: 'o'.repeat(65) } },
      { name: 'openid of 65', route: 'login', code: -1, body: { ...profile, openid: 'o'.repeat(65) } },
      { name: 'openid of 16,000', route: 'loginByOpenid', code: -1, body: { openid: 'o'.repeat(16_000) } },
      {
        name: 'openid of 1 MB',
        route: 'loginByOpenid',
        code: 413,
        status: 413,
        body: { openid: 'o'.repeat(1000_000) },
      },
      { name: 'openid of 65', route: 'logout', code: -1, body: { openid: 'o'.repeat(65) } },
      { name: 'nick_name of 65 emoji', route: 'login', code: -1, body: { ...profile, nick_name: '😀'.repeat(65) } },
      { name: 'phone of 33', route: 'login', code: -1, body: { ...profile, phone: '1'.repeat(33) } },
      {
        name: 'avatar of 513',
        route: 'login',
        code: -1,
        body: { ...profile, avatar: `https://e.com/${'a'.repeat(500)}` },
      },
      { name: 'js_code of 129', route: 'getOpenid', code: -1, body: { js_code: 'c'.repeat(129) } },
      {
        name: 'update.nick_name of 65',
        route: 'update',
        code: -4,
        body: { user_id: user.user_id, update: { nick_name: 'n'.repeat(65) } },
      },
      { name: 'user_id 2^53', route: 'update', code: -1, body: { user_id: 2 ** 53, update: { phone: '2' } } },
      {
        name: 'user_id 2^53 + 2',
        route: 'update',
        code: -1,
        raw: `{"user_id":9007199254740994,"update":{"phone":"2"}}`,
      },
      {
        name: 'user_id of 30 digits',
        route: 'update',
        code: -1,
        body: { user_id: '1'.repeat(30), update: { phone: '2' } },
      },
      { name: 'user_id 1e400', route: 'update', code: -1, raw: `{"user_id":1e400,"update":{"phone":"2"}}` },
      {
        name: 'gender 1e400',
        route: 'login',
        code: -1,
        raw: JSON.stringify(profile).replace('"gender":1', '"gender":1e400'),
      },
      { name: 'gender 2', route: 'login', code: -1, body: { ...profile, gender: 2 } },
      { name: 'gender -1', route: 'login', code: -1, body: { ...profile, gender: -1 } },
    ]);
  });

  it('numbers where strings belong and strings where numbers belong, in every field', async () => {
    const cases: Case[] = [];
    const profile = fresh();
    for (const field of ['openid', 'nick_name', 'avatar', 'phone'] as const) {
      for (const v of NOT_STRINGS)
        cases.push({
          name: `${field}=${JSON.stringify(v)}`,
          route: 'login',
          code: -1,
          body: { ...profile, [field]: v },
        });
    }
    for (const v of NOT_NUMBERS)
      cases.push({ name: `gender=${JSON.stringify(v)}`, route: 'login', code: -1, body: { ...profile, gender: v } });
    for (const route of ['loginByOpenid', 'logout', 'get']) {
      for (const v of NOT_STRINGS)
        cases.push({ name: `openid=${JSON.stringify(v)}`, route, code: -1, body: { openid: v } });
    }
    for (const v of NOT_STRINGS)
      cases.push({ name: `js_code=${JSON.stringify(v)}`, route: 'getOpenid', code: -1, body: { js_code: v } });
    for (const v of [...NOT_NUMBERS, 0, -1]) {
      cases.push({
        name: `user_id=${JSON.stringify(v)}`,
        route: 'update',
        code: -1,
        body: { user_id: v, update: { phone: '2' } },
      });
    }
    // update itself: null is "missing" (-1); a string that is not JSON is -3; anything else
    // that is not a usable object is -4, as the document's table says.
    const updates: [unknown, number][] = [
      [null, -1],
      ['', -3],
      ['{bad', -3],
      ['123', -4],
      ['"str"', -4],
      ['[]', -4],
      [123, -4],
      [true, -4],
      [[], -4],
      [[{ phone: '1' }], -4],
      [{}, -4],
    ];
    for (const [v, code] of updates) {
      cases.push({
        name: `update=${JSON.stringify(v)}`,
        route: 'update',
        code,
        body: { user_id: user.user_id, update: v },
      });
    }
    for (const field of ['nick_name', 'avatar', 'phone']) {
      for (const v of NOT_STRINGS) {
        cases.push({
          name: `update.${field}=${JSON.stringify(v)}`,
          route: 'update',
          code: -4,
          body: { user_id: user.user_id, update: { [field]: v } },
        });
      }
    }
    for (const v of NOT_NUMBERS) {
      cases.push({
        name: `update.gender=${JSON.stringify(v)}`,
        route: 'update',
        code: -4,
        body: { user_id: user.user_id, update: { gender: v } },
      });
    }
    // The JSON parser refuses a __proto__ key anywhere (-1); other keys are names update refuses.
    const keys: [string, unknown, number][] = [
      ['__proto__', { phone: '9' }, -1],
      ['constructor', { prototype: { phone: '9' } }, -4],
      ['openid', 'x', -4],
      ['user_id', 1, -4],
    ];
    for (const [k, v, code] of keys) {
      cases.push({
        name: `update.${k}`,
        route: 'update',
        code,
        raw: `{"user_id":${user.user_id},"update":{"${k}":${JSON.stringify(v)}}}`,
      });
    }
    cases.push({
      name: '__proto__ holding the fields',
      route: 'login',
      code: -1,
      raw: `{"__proto__":${JSON.stringify(profile)}}`,
    });
    await run(cases);
  });

  it('accepts digit strings for numbers (a form has nothing else), as documented', async () => {
    const profile = { ...fresh(), gender: '0' };
    const login = await svc.call('login', profile);
    expect(login.body.code).to.equal(0);
    expect(login.body.data.gender).to.equal(0);
    const update = await svc.call('update', { user_id: String(login.body.data.user_id), update: { gender: '1' } });
    expect(update.body.code).to.equal(0);
    expect((await svc.call('get', { openid: profile.openid })).body.data.gender).to.equal(1);
  });
});
