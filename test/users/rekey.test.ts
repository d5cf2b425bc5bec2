import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createKnex, dropDatabase, ensureDatabase, migrateLatest, type Knex } from '../../src/db/knex';
import { createLogger } from '../../src/logger';
import { createServices, type Services } from '../../src/services';
import { PhoneCipher, parsePhoneKeys } from '../../src/users/phone-cipher';
import { RUN_ID, TEST_ENV, newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';

const ROOT = join(__dirname, '..', '..');
const keyText = (id: string) => `${id}:${randomBytes(32).toString('base64')}`;
const newPhone = () => `1${String(Math.floor(Math.random() * 1e10)).padStart(10, '0')}`;

describe('npm run rekey: key rotation and plain-text phones, in batches, beside a running service', function () {
  this.timeout(60_000);
  // A database of its own: the rekey walks the whole table, and its counts are this test's.
  const env = {
    DATABASE_URL: `${TEST_ENV.DATABASE_URL!.replace(/\/[^/]+$/, '')}/user_service_test_${RUN_ID}_rekey`,
    REDIS_KEY_PREFIX: `${TEST_ENV.REDIS_KEY_PREFIX}rekey:`,
  };
  const settings = testConfig(env).db;
  const k1 = keyText('k1');
  const k2 = keyText('k2');
  let db: Knex;
  const running: (TestService | Services)[] = [];
  const stop = async (s: TestService | Services) => ('stop' in s ? s.stop() : s.close());

  const service = async (PHONE_KEYS: string) => {
    const s = await startService({ ...env, PHONE_KEYS });
    running.push(s);
    return s;
  };
  const services = async (PHONE_KEYS: string, logTo?: LogCapture) => {
    const s = await createServices(
      testConfig({ ...env, PHONE_KEYS }),
      logTo ? createLogger({ level: 'error' }, logTo) : createLogger('silent'),
    );
    running.push(s);
    return s;
  };
  const rekeyCli = (PHONE_KEYS: string, ...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/rekey.ts', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...TEST_ENV, ...env, PHONE_KEYS, LOG_LEVEL: 'info' },
      encoding: 'utf8',
      timeout: 30_000,
    });
  const stored = async () =>
    (await db('users').select('id', 'openid', 'phone').orderBy('id')) as {
      id: number;
      openid: string;
      phone: string;
    }[];

  before(async () => {
    await ensureDatabase(settings);
    db = createKnex(settings);
    await migrateLatest(db);
  });
  afterEach(async () => {
    for (const s of running.splice(0)) await stop(s);
    await db('users').del();
  });
  after(async () => {
    await db.destroy();
    await dropDatabase(settings);
  });

  it('rotates end to end: add a key, rekey, remove the old key, and every number is still read', async () => {
    const users = new Map<string, string>();
    const before = await service(k1);
    for (let i = 0; i < 24; i++) {
      const openid = newOpenid('rot');
      const phone = newPhone();
      users.set(openid, phone);
      const login = await before.call('login', loginBody(openid, { phone }));
      if (i % 3 === 0) {
        const next = newPhone();
        await before.call('update', { user_id: login.body.data.user_id, update: { phone: next } });
        users.set(openid, next);
      }
      await before.call('get', { openid }); // cached, sealed with k1
    }
    // Rows from before encryption: plain text, which the rekey seals too.
    for (let i = 0; i < 6; i++) {
      const openid = newOpenid('plain');
      users.set(openid, newPhone());
      await db('users').insert({
        openid,
        nick_name: 'p',
        avatar: 'https://e.com/a',
        gender: 1,
        phone: users.get(openid),
      });
    }
    const cleared = newOpenid('empty');
    await db('users').insert({ openid: cleared, nick_name: 'e', avatar: 'https://e.com/a', gender: 1, phone: '' });
    await stop(running.pop()!);

    // Add k2 in front: it seals from now on; k1 still opens.
    const both = await service(`${k2},${k1}`);
    for (const [openid, phone] of users) expect((await both.call('get', { openid })).body.data.phone).to.equal(phone);

    const run = rekeyCli(`${k2},${k1}`, '--batch', '7');
    expect(run.status, run.stderr).to.equal(0);
    expect(run.stdout)
      .to.include('rekey: 30 phone(s) sealed with key "k2"')
      .and.include('0 unreadable')
      .and.include('0 left');
    expect(run.stderr).to.match(/rekey: \d+\/30 rows/); // progress (a line every few seconds off a terminal)
    for (const phone of users.values()) expect(run.stdout + run.stderr).to.not.include(phone);
    const rows = await stored();
    expect(rows.filter((r) => r.phone !== '').every((r) => r.phone.startsWith('v1.k2.'))).to.equal(true);
    expect(rows.find((r) => r.openid === cleared)!.phone).to.equal('');

    // Run again: nothing left to do. Resuming after a stop is the same run.
    const again = rekeyCli(`${k2},${k1}`);
    expect(again.stdout).to.include('rekey: 0 phone(s) sealed').and.include('0 left');
    await stop(running.pop()!);

    // Remove k1: every number still reads, from MySQL and through the profiles cached before
    // (the rekey tombstoned each one it changed, so none sealed with k1 is served).
    const after = await service(k2);
    for (const [openid, phone] of users) {
      expect((await after.call('get', { openid })).body.data.phone, openid).to.equal(phone);
      expect((await after.call('loginByOpenid', { openid })).body.data.phone, openid).to.equal(phone);
    }
    expect((await after.call('get', { openid: cleared })).body.data.phone).to.equal('');
    const k2only = new PhoneCipher(parsePhoneKeys(k2));
    for (const r of await stored()) expect(k2only.open(r.phone, r.openid)).to.equal(users.get(r.openid) ?? '');
  });

  it('loses no update that races it: each row is sealed from its phone as it is under the row lock', async () => {
    const old = new PhoneCipher(parsePhoneKeys(k1));
    const ids: number[] = [];
    const last = new Map<number, string>();
    for (let i = 0; i < 160; i++) {
      const openid = newOpenid('race');
      const phone = newPhone();
      const [id] = await db('users').insert({
        openid,
        nick_name: 'r',
        avatar: 'https://e.com/a',
        gender: 1,
        phone: old.seal(phone, openid),
      });
      ids.push(id!);
      last.set(id!, phone);
    }
    // The service already runs with k2 in front, as the rotation asks; the rekey is another process.
    const serving = (await services(`${k2},${k1}`)).users;
    const rekey = (await services(`${k2},${k1}`)).users;
    let rekeyDone = false;
    let batches = 0;
    const rekeying = (async () => {
      for (let after = 0; ; batches++) {
        const done = await rekey.rekeyPhones(after, 8);
        if (!done) break;
        after = done.lastId;
      }
      rekeyDone = true;
    })();
    // Eight writers, each on its own users (so "the last acknowledged phone" is defined), until
    // the rekey is through.
    const writers = Array.from({ length: 8 }, async (_, w) => {
      const mine = ids.filter((_, i) => i % 8 === w);
      for (let n = 0; !rekeyDone || n < mine.length; n++) {
        const id = mine[n % mine.length]!;
        const phone = newPhone();
        await serving.update(id, { phone });
        last.set(id, phone);
      }
    });
    await Promise.all([rekeying, ...writers]);
    expect(batches).to.be.at.least(5);

    const k2only = new PhoneCipher(parsePhoneKeys(k2));
    const rows = await stored();
    expect(rows).to.have.length(160);
    const lost = rows.filter((r) => k2only.open(r.phone, r.openid) !== last.get(r.id));
    expect(
      lost.map((r) => r.id),
      'rows whose last acknowledged phone was overwritten',
    ).to.deep.equal([]);
    for (const r of rows.slice(0, 20)) {
      expect(JSON.parse(await serving.get(r.openid)).phone).to.equal(last.get(r.id));
    }
  });

  it('leaves a row it cannot open as it is, with an error line, and counts it as left', async () => {
    const openid = newOpenid('lost');
    const lostKey = keyText('gone');
    await db('users').insert({
      openid,
      nick_name: 'x',
      avatar: 'https://e.com/a',
      gender: 1,
      phone: new PhoneCipher(parsePhoneKeys(lostKey)).seal('13800000000', openid),
    });
    const logs = new LogCapture();
    const { users } = await services(k2, logs);
    expect(await users.rekeyPhones(0, 10)).to.deep.include({ found: 1, resealed: 0, unreadable: 1 });
    expect(await users.countPhonesToRekey()).to.equal(1);
    const line = JSON.parse(logs.lines[0]!) as { msg: string; keyId: string; reason: string };
    expect(line).to.include({
      msg: 'stored phone cannot be decrypted for its row',
      keyId: 'gone',
      reason: 'unknown key',
    });
    const run = rekeyCli(k2);
    expect(run.status).to.equal(1);
    expect(run.stdout).to.include('1 unreadable').and.include('1 left');
  });
});
