import { expect } from 'chai';
import { createKnex, dropDatabase, ensureDatabase, migrateLatest, type Knex } from '../../src/db/knex';
import { migrationSource } from '../../src/db/migrations';
import { UserRepository } from '../../src/users/repository';
import { newOpenid, testConfig, testPhones } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { testDb } from '../helpers/stores';

/**
 * The users table's next AUTO_INCREMENT value, read live: MySQL 8 caches information_schema's
 * table statistics (information_schema_stats_expiry, 24 h by default) unless the session turns
 * that off; MariaDB has no such cache (nor the variable) and reads the engine's counter.
 */
async function nextId(db: Knex): Promise<number> {
  return db.transaction(async (trx) => {
    const [vars] = await trx.raw("SHOW VARIABLES LIKE 'information_schema_stats_expiry'");
    if (vars.length) await trx.raw('SET SESSION information_schema_stats_expiry = 0');
    const [[row]] = await trx.raw(
      "SELECT AUTO_INCREMENT AS next FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users'",
    );
    const [[status]] = await trx.raw("SHOW TABLE STATUS LIKE 'users'");
    expect(Number(status.Auto_increment)).to.equal(Number(row.next));
    return Number(row.next);
  });
}

/** Later migrations stay applied: this one is moved down and up alone. */
const BIGINT = '20261126230000_users_id_bigint';

const idColumn = async (db: Knex) =>
  (
    await db.raw(
      "SELECT COLUMN_TYPE AS type, EXTRA AS extra FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users' AND COLUMN_NAME = 'id'",
    )
  )[0][0];

/** A database of its own (ids near 2^53 there would push every later test's ids past it). */
function ownDatabase(name: string) {
  const config = testConfig();
  const url = `${config.db.url}_${name}`;
  return { url, settings: { ...config.db, url } };
}

describe('user ids', function () {
  this.timeout(60_000);

  describe('no id is spent on a login of an existing openid', () => {
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

    it('leaves the next AUTO_INCREMENT unchanged over repeated logins', async () => {
      const openid = newOpenid();
      const first = await nextId(db);
      const login = await svc.call('login', loginBody(openid, { nick_name: 'first' }));
      expect(login.body.code).to.equal(0);
      // The measurement sees a real insert: one id, exactly.
      expect(await nextId(db)).to.equal(first + 1);

      for (let i = 0; i < 50; i++) {
        const again = await svc.call('login', loginBody(openid, { nick_name: `again ${i}` }));
        expect(again.body.code).to.equal(0);
        expect(again.body.data).to.include({ user_id: login.body.data.user_id, nick_name: 'first' });
      }
      await Promise.all(Array.from({ length: 20 }, () => svc.call('login', loginBody(openid))));
      expect(await nextId(db)).to.equal(first + 1);
    });

    it('makes one row of 20 concurrent first logins of one openid, and fails none', async () => {
      const openid = newOpenid();
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => svc.call('login', loginBody(openid, { nick_name: `racer ${i}` }))),
      );
      expect(answers.map((a) => a.body.code)).to.deep.equal(answers.map(() => 0));
      const ids = new Set(answers.map((a) => a.body.data.user_id));
      expect(ids.size).to.equal(1);
      const rows = await db('users').where({ openid }).select('id', 'nick_name');
      expect(rows).to.have.length(1);
      expect(rows[0].id).to.equal([...ids][0]);
      // Every answer is that one row, whoever won.
      expect(new Set(answers.map((a) => a.body.data.nick_name))).to.deep.equal(new Set([rows[0].nick_name]));
    });
  });

  describe('users.id is BIGINT UNSIGNED (migration 20261126230000_users_id_bigint)', () => {
    const { settings } = ownDatabase('ids_mig');
    let db: Knex;
    before(async () => {
      await ensureDatabase(settings);
      db = createKnex(settings);
    });
    after(async () => {
      await db.destroy();
      await dropDatabase(settings);
    });

    it('goes up, down and up again, keeping rows, ids and the next id', async () => {
      await migrateLatest(db);
      expect(await idColumn(db)).to.deep.equal({ type: 'bigint(20) unsigned', extra: 'auto_increment' });
      const user = { nick_name: 'n', avatar: 'https://e.com/a', gender: 1, phone: '1' };
      await db('users').insert([
        { openid: 'a', ...user },
        { id: 0xffffffff - 1, openid: 'b', ...user },
      ]);

      await db.migrate.down({ migrationSource, name: BIGINT });
      expect(await idColumn(db)).to.deep.equal({ type: 'int(10) unsigned', extra: 'auto_increment' });
      expect(await db('users').orderBy('id').pluck('id')).to.deep.equal([1, 0xffffffff - 1]);
      expect(await nextId(db)).to.equal(0xffffffff);

      await db.migrate.up({ migrationSource, name: BIGINT });
      expect(await idColumn(db)).to.deep.equal({ type: 'bigint(20) unsigned', extra: 'auto_increment' });
      expect(await nextId(db)).to.equal(0xffffffff);
      // Past where INT UNSIGNED ends.
      await db('users').insert([
        { openid: 'c', ...user },
        { openid: 'd', ...user },
      ]);
      expect(await db('users').orderBy('id').pluck('id')).to.deep.equal([1, 0xffffffff - 1, 0xffffffff, 2 ** 32]);
    });

    it('refuses to go down while an id does not fit INT UNSIGNED, changing nothing', async () => {
      await migrateLatest(db);
      const refused = await db.migrate.down({ migrationSource, name: BIGINT }).then(
        () => null,
        (err: Error) => err,
      );
      expect(refused?.message).to.match(/largest id is 4294967296/);
      expect(await idColumn(db)).to.include({ type: 'bigint(20) unsigned' });
      expect(await db('users').count({ n: '*' })).to.deep.equal([{ n: 4 }]);
    });
  });

  describe('user_id stays a JSON integer', () => {
    const { url, settings } = ownDatabase('ids_big');
    let svc: TestService;
    let db: Knex;
    before(async () => {
      svc = await startService({ DATABASE_URL: url });
      db = createKnex(settings);
    });
    after(async () => {
      await svc.stop();
      await db.destroy();
      await dropDatabase(settings);
    });

    it('up to 2^53 - 1: mysql2 answers a number, every route a JSON integer', async () => {
      const openid = newOpenid();
      await db('users').insert({ id: Number.MAX_SAFE_INTEGER, ...loginBody(openid) });
      const [[row]] = await db.raw('SELECT id FROM users WHERE openid = ?', [openid]);
      expect(row.id).to.be.a('number').and.equal(Number.MAX_SAFE_INTEGER);

      const login = await svc.call('login', loginBody(openid));
      expect(login.text).to.include(`"user_id":${Number.MAX_SAFE_INTEGER},`);
      const cached = await svc.call('loginByOpenid', { openid });
      expect(cached.text).to.include(`"user_id":${Number.MAX_SAFE_INTEGER},`);
      const update = await svc.call('update', { user_id: Number.MAX_SAFE_INTEGER, update: { nick_name: 'big' } });
      expect(update.body.code).to.equal(0);
      const session = await svc.call('session', { token: cached.body.data.token });
      expect(session.body.data).to.include({ user_id: Number.MAX_SAFE_INTEGER, nick_name: 'big' });
    });

    it('past 2^53: mysql2 answers a string, and the service refuses rather than answer it', async () => {
      const openid = newOpenid();
      const big = '9007199254740993';
      await db.raw('INSERT INTO users (id, openid, nick_name, avatar, gender, phone) VALUES (?, ?, ?, ?, ?, ?)', [
        big,
        openid,
        'n',
        'https://e.com/a',
        1,
        '1',
      ]);
      const [[row]] = await db.raw('SELECT id FROM users WHERE openid = ?', [openid]);
      expect(row.id).to.equal(big);

      for (const [route, body, code] of [
        ['loginByOpenid', { openid }, -2],
        ['get', { openid }, -3],
        ['login', loginBody(openid), -2],
      ] as const) {
        const res = await svc.call(route, body);
        expect(res.body.code, route).to.equal(code);
        expect(res.text, route).to.not.include(big);
      }
      // Lookups batched with it (one query) are answered all the same.
      const other = newOpenid();
      await db('users').insert({ id: 5, ...loginBody(other) });
      const repository = new UserRepository(db, 5000, testPhones());
      const [mine, theirs] = await Promise.allSettled([
        repository.findByOpenid(openid),
        repository.findByOpenid(other),
      ]);
      expect(mine.status).to.equal('rejected');
      expect(String((mine as PromiseRejectedResult).reason)).to.match(/past Number.MAX_SAFE_INTEGER/);
      expect(theirs.status === 'fulfilled' && theirs.value.map((r) => r.id)).to.deep.equal([5]);
    });

    it('refuses a user_id past 2^53 - 1 with -1', async () => {
      for (const user_id of [Number.MAX_SAFE_INTEGER + 1, 2 ** 64, '9007199254740993']) {
        const res = await svc.call('update', { user_id, update: { nick_name: 'x' } });
        expect(res.body.code, String(user_id)).to.equal(-1);
      }
    });
  });
});
