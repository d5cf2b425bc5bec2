import { expect } from 'chai';
import type { Knex } from 'knex';
import { createKnex, dropDatabase } from '../../src/db/knex';
import { newOpenid, testConfig } from '../helpers/env';
import { userPart } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { testDb } from '../helpers/stores';

const DATE = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/;

function profile(openid: string, extra: Record<string, unknown> = {}) {
  return {
    openid,
    nick_name: '张三',
    avatar: 'https://example.com/media/avatar/1.jpg',
    gender: 1,
    phone: '12312312312',
    ...extra,
  };
}

describe('user routes', () => {
  let svc: TestService;
  let db: Knex;

  before(async () => {
    svc = await startService();
    db = testDb();
  });
  after(async () => {
    await db.destroy();
    await svc.stop();
  });

  const rowsFor = (openid: string) => db('users').where({ openid });

  describe('login', () => {
    it('registers a user and answers the stored user with code 0', async () => {
      const openid = newOpenid();
      const res = await svc.call('login', profile(openid));
      expect(res.status).to.equal(200);
      expect(res.body.code).to.equal(0);
      expect(res.body.msg).to.equal('success');
      const user = res.body.data;
      expect(user).to.include({ openid, nick_name: '张三', gender: 1, phone: '12312312312' });
      expect(user.user_id).to.be.a('number');
      expect(user.ctime).to.match(DATE);
      expect(user.mtime).to.match(DATE);
      expect(await rowsFor(openid)).to.have.length(1);
    });

    it('accepts a form body with gender as a digit string', async () => {
      const openid = newOpenid();
      const res = await svc.call('login', profile(openid, { gender: '0' }), { form: true });
      expect(res.body.code).to.equal(0);
      expect(res.body.data.gender).to.equal(0);
    });

    it('round-trips emoji and CJK nicknames exactly (utf8mb4)', async () => {
      const openid = newOpenid();
      const nick = '小明👨‍👩‍👧‍👦🎉𝒳';
      await svc.call('login', profile(openid, { nick_name: nick }));
      const res = await svc.call('get', { openid });
      expect(res.body.data.nick_name).to.equal(nick);
      const [row] = await rowsFor(openid);
      expect(row.nick_name).to.equal(nick);
    });

    it('answers the stored user unchanged when the openid exists', async () => {
      const openid = newOpenid();
      const first = await svc.call('login', profile(openid));
      const again = await svc.call('login', profile(openid, { nick_name: 'other', phone: '999' }));
      expect(again.body.code).to.equal(0);
      expect(userPart(again.body.data)).to.deep.equal(userPart(first.body.data));
      expect(await rowsFor(openid)).to.have.length(1);
    });

    it('makes exactly one row for 20 identical concurrent logins, all answered 0', async () => {
      const openid = newOpenid();
      const answers = await Promise.all(Array.from({ length: 20 }, () => svc.call('login', profile(openid))));
      for (const a of answers) expect(a.body.code).to.equal(0);
      const ids = new Set(answers.map((a) => a.body.data.user_id));
      expect(ids.size).to.equal(1);
      expect(await rowsFor(openid)).to.have.length(1);
    });

    const invalid: [string, Record<string, unknown>][] = [
      ['missing openid', { openid: undefined }],
      ['missing nick_name', { nick_name: undefined }],
      ['missing avatar', { avatar: undefined }],
      ['missing gender', { gender: undefined }],
      ['missing phone', { phone: undefined }],
      ['gender 2', { gender: 2 }],
      ['gender "x"', { gender: 'x' }],
      ['avatar not a URL', { avatar: 'not a url' }],
      ['avatar ftp URL', { avatar: 'ftp://example.com/a.jpg' }],
      ['avatar over 512', { avatar: `https://example.com/${'a'.repeat(500)}` }],
      ['nick_name over 64', { nick_name: 'n'.repeat(65) }],
      ['nick_name empty', { nick_name: '' }],
      ['phone over 32', { phone: '1'.repeat(33) }],
      ['openid over 64', { openid: 'o'.repeat(65) }],
      ['openid a number', { openid: 12345 }],
      ['phone a number', { phone: 12312312312 }],
      ['nick_name with NUL', { nick_name: 'a\u0000b' }],
      ['nick_name with a lone surrogate', { nick_name: 'a\ud800b' }],
    ];
    for (const [what, patch] of invalid) {
      it(`answers -1 for ${what} and writes nothing`, async () => {
        const openid = typeof patch.openid === 'string' ? patch.openid : newOpenid();
        const body = profile(openid, patch);
        const res = await svc.call('login', body);
        expect(res.status).to.equal(200);
        expect(res.body.code).to.equal(-1);
        expect(res.body.data).to.equal(null);
        expect(await rowsFor(openid)).to.have.length(0);
      });
    }

    it('counts a 64-emoji nickname as 64 characters, as MySQL does', async () => {
      const openid = newOpenid();
      const nick = '😀'.repeat(64);
      const res = await svc.call('login', profile(openid, { nick_name: nick }));
      expect(res.body.code).to.equal(0);
      expect(res.body.data.nick_name).to.equal(nick);
    });
  });

  describe('loginByOpenid', () => {
    it('answers the user with code 0', async () => {
      const openid = newOpenid();
      const login = await svc.call('login', profile(openid));
      const res = await svc.call('loginByOpenid', { openid });
      expect(res.body.code).to.equal(0);
      expect(userPart(res.body.data)).to.deep.equal(userPart(login.body.data));
      expect(res.headers.get('content-type')).to.match(/^application\/json/);
    });

    it('answers -2 for an unknown openid (the front end then calls login)', async () => {
      const res = await svc.call('loginByOpenid', { openid: newOpenid('unknown') });
      expect(res.body).to.deep.equal({ code: -2, msg: 'no such user', data: null });
    });

    it('answers -1 without an openid, in JSON and in a form', async () => {
      expect((await svc.call('loginByOpenid', {})).body.code).to.equal(-1);
      expect((await svc.call('loginByOpenid', { openid: '' }, { form: true })).body.code).to.equal(-1);
    });
  });

  describe('get', () => {
    it('answers the user with code 0', async () => {
      const openid = newOpenid();
      await svc.call('login', profile(openid));
      const res = await svc.call('get', { openid }, { form: true });
      expect(res.body.code).to.equal(0);
      expect(res.body.data.openid).to.equal(openid);
    });

    it('answers -4 for an unknown openid and -1 without one', async () => {
      expect((await svc.call('get', { openid: newOpenid('unknown') })).body.code).to.equal(-4);
      expect((await svc.call('get', {})).body.code).to.equal(-1);
      expect((await svc.call('get', { openid: ['a', 'b'] })).body.code).to.equal(-1);
    });

    it('treats openids that differ only in case as different users', async () => {
      const openid = `${newOpenid()}Ab`;
      await svc.call('login', profile(openid));
      expect((await svc.call('get', { openid: openid.toLowerCase() })).body.code).to.equal(-4);
      expect((await svc.call('get', { openid: openid.toUpperCase() })).body.code).to.equal(-4);
    });
  });

  describe('update', () => {
    async function register(extra: Record<string, unknown> = {}) {
      const openid = newOpenid();
      const res = await svc.call('login', profile(openid, extra));
      return res.body.data as { user_id: number; openid: string; mtime: string };
    }

    it('applies a JSON object, answers data [], and moves mtime', async () => {
      const user = await register();
      const res = await svc.call('update', { user_id: user.user_id, update: { phone: '13333333333', gender: 0 } });
      expect(res.body).to.deep.equal({ code: 0, msg: 'success', data: [] });
      const after = (await svc.call('get', { openid: user.openid })).body.data;
      expect(after.phone).to.equal('13333333333');
      expect(after.gender).to.equal(0);
      expect(after.mtime > user.mtime).to.equal(true, `${after.mtime} > ${user.mtime}`);
    });

    it('applies the document example: a form with update as a JSON string', async () => {
      const user = await register();
      const res = await svc.call(
        'update',
        { user_id: String(user.user_id), update: '{"phone":"13333333333","nick_name":"李四🐱"}' },
        { form: true },
      );
      expect(res.body.code).to.equal(0);
      const after = (await svc.call('loginByOpenid', { openid: user.openid })).body.data;
      expect(after).to.include({ phone: '13333333333', nick_name: '李四🐱' });
    });

    const cases: [string, (id: number) => unknown, number][] = [
      ['missing user_id', () => ({ update: { phone: '1' } }), -1],
      ['a non-integer user_id', () => ({ user_id: 'abc', update: { phone: '1' } }), -1],
      ['a fractional user_id', () => ({ user_id: 1.5, update: { phone: '1' } }), -1],
      ['missing update', (id) => ({ user_id: id }), -1],
      ['update null', (id) => ({ user_id: id, update: null }), -1],
      ['update a string that is not JSON', (id) => ({ user_id: id, update: '{phone:' }), -3],
      ['update an empty string', (id) => ({ user_id: id, update: '' }), -3],
      ['update an empty object', (id) => ({ user_id: id, update: {} }), -4],
      ['update a JSON array', (id) => ({ user_id: id, update: '[1,2]' }), -4],
      ['update a JSON number', (id) => ({ user_id: id, update: '42' }), -4],
      ['update of openid', (id) => ({ user_id: id, update: { openid: 'x' } }), -4],
      ['update of user_id', (id) => ({ user_id: id, update: { user_id: 7 } }), -4],
      ['update of ctime', (id) => ({ user_id: id, update: { ctime: '2020-01-01 00:00:00' } }), -4],
      ['update of mtime', (id) => ({ user_id: id, update: { mtime: '2020-01-01 00:00:00' } }), -4],
      ['update of an unknown field', (id) => ({ user_id: id, update: { age: 3 } }), -4],
      ['a valid and a forbidden field together', (id) => ({ user_id: id, update: { phone: '1', openid: 'x' } }), -4],
      ['gender 5', (id) => ({ user_id: id, update: { gender: 5 } }), -4],
      ['avatar not a URL', (id) => ({ user_id: id, update: '{"avatar":"nope"}' }), -4],
      ['nick_name over 64', (id) => ({ user_id: id, update: { nick_name: 'x'.repeat(65) } }), -4],
    ];
    for (const [what, body, code] of cases) {
      it(`answers ${code} for ${what} and changes nothing`, async () => {
        const user = await register();
        const [before] = await db('users').where({ id: user.user_id });
        const res = await svc.call('update', body(user.user_id));
        expect(res.status).to.equal(200);
        expect(res.body.code).to.equal(code);
        const [after] = await db('users').where({ id: user.user_id });
        expect(after).to.deep.equal(before);
      });
    }

    it('answers -2 for a user_id that does not exist', async () => {
      const res = await svc.call('update', { user_id: 2147483000, update: { phone: '1' } });
      expect(res.body.code).to.equal(-2);
    });
  });

  describe('logout', () => {
    it('answers 0, also for an openid it never saw, and -1 without one', async () => {
      const openid = newOpenid();
      await svc.call('login', profile(openid));
      expect((await svc.call('logout', { openid })).body.code).to.equal(0);
      expect((await svc.call('logout', { openid })).body.code).to.equal(0);
      expect((await svc.call('logout', { openid: newOpenid('never') })).body.code).to.equal(0);
      expect((await svc.call('logout', {})).body.code).to.equal(-1);
    });

    it('keeps the user: loginByOpenid still finds it after logout', async () => {
      const openid = newOpenid();
      await svc.call('login', profile(openid));
      await svc.call('logout', { openid });
      expect((await svc.call('loginByOpenid', { openid })).body.code).to.equal(0);
    });
  });
});

describe('get on a database that lost its unique index', () => {
  let svc: TestService;
  let db: Knex;
  const dbUrl = `${testConfig().db.url}_dup`;

  before(async () => {
    svc = await startService({ DATABASE_URL: dbUrl });
    db = createKnex({ ...testConfig().db, url: dbUrl });
    await db.schema.alterTable('users', (t) => t.dropUnique(['openid'], 'users_openid_unique'));
  });
  after(async () => {
    await db.destroy();
    await svc.stop();
    await dropDatabase({ ...testConfig().db, url: dbUrl });
  });

  it('answers -2 when several rows have one openid', async () => {
    const openid = newOpenid();
    const row = { openid, nick_name: 'a', avatar: 'https://e.com/a', gender: 0, phone: '1' };
    await db('users').insert([row, row]);
    const res = await svc.call('get', { openid });
    expect(res.body.code).to.equal(-2);
    expect(res.body.msg).to.match(/several/);
  });
});
