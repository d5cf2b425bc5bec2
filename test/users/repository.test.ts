import { expect } from 'chai';
import { createKnex, dropDatabase, ensureDatabase, migrateLatest, type Knex } from '../../src/db/knex';
import { UserRepository } from '../../src/users/repository';
import { newOpenid, testConfig } from '../helpers/env';
import { watchUserSelects } from '../helpers/stores';

const user = (openid: string, nick = 'n') => ({
  openid,
  nick_name: nick,
  avatar: 'https://e.com/a',
  gender: 1,
  phone: '1',
});

/** The SELECTs of users that `db` sends while `work` runs. */
async function selectsDuring(db: Knex, work: () => Promise<unknown>): Promise<string[]> {
  const selects = watchUserSelects(db);
  try {
    await work();
  } finally {
    selects.stop();
  }
  return selects.sql;
}

describe('UserRepository lookups by openid (one query per event-loop turn)', () => {
  let db: Knex;
  let repo: UserRepository;

  before(async () => {
    db = createKnex(testConfig().db);
    await migrateLatest(db); // the run's database exists; a service may not have migrated it yet
    repo = new UserRepository(db, 5000);
  });
  after(async () => {
    await db.destroy();
  });

  it('answers the lookups of one turn with one query, each caller with its own rows', async () => {
    const a = newOpenid('a');
    const b = newOpenid('b');
    const upper = a.toUpperCase(); // openids are case-sensitive: another user
    const missing = newOpenid('missing');
    await db('users').insert([user(a, 'A'), user(b, 'B'), user(upper, 'UPPER')]);

    let answers: Awaited<ReturnType<UserRepository['findByOpenid']>>[] = [];
    const sent = await selectsDuring(db, async () => {
      answers = await Promise.all([a, b, missing, upper, a].map((o) => repo.findByOpenid(o)));
    });
    expect(sent).to.have.length(1);
    expect(sent[0]).to.match(/where openid in \(\?,\?,\?,\?,\?\)/i);
    expect(answers.map((rows) => rows.map((r) => r.nick_name))).to.deep.equal([['A'], ['B'], [], ['UPPER'], ['A']]);
    expect(answers[0]![0]).to.include({ openid: a, gender: 1, version: 1 });
  });

  it('sends a lone lookup as the plain indexed SELECT, and lookups of later turns separately', async () => {
    const a = newOpenid('a');
    await db('users').insert(user(a, 'A'));
    const sent = await selectsDuring(db, async () => {
      expect((await repo.findByOpenid(a))[0]!.nick_name).to.equal('A');
      expect(await repo.findByOpenid(newOpenid('missing'))).to.deep.equal([]);
    });
    expect(sent).to.have.length(2);
    for (const sql of sent) expect(sql).to.match(/where openid = \? limit 2$/i);
  });

  it('matches a row imported with trailing spaces in a batch as SQL does alone (PAD SPACE)', async () => {
    const a = newOpenid('pad');
    await db('users').insert(user(`${a}  `, 'padded'));
    const alone = await repo.findByOpenid(a);
    const [batched] = await Promise.all([repo.findByOpenid(a), repo.findByOpenid(newOpenid())]);
    expect(alone.map((r) => r.nick_name)).to.deep.equal(['padded']);
    expect(batched!.map((r) => r.nick_name)).to.deep.equal(['padded']);
  });

  it('splits a turn of more than 100 lookups into queries of at most 100', async () => {
    const openids = Array.from({ length: 250 }, () => newOpenid('many'));
    await db('users').insert(openids.filter((_, i) => i % 2 === 0).map((o) => user(o, o)));
    let answers: { nick_name: string }[][] = [];
    const sent = await selectsDuring(db, async () => {
      answers = await Promise.all(openids.map((o) => repo.findByOpenid(o)));
    });
    expect(sent).to.have.length(3);
    expect(answers.map((rows) => rows[0]?.nick_name ?? null)).to.deep.equal(
      openids.map((o, i) => (i % 2 === 0 ? o : null)),
    );
  });

  it('fails every lookup of a batch whose query fails', async () => {
    // A database without the table: every query fails.
    const settings = { ...testConfig().db, url: `${testConfig().db.url}_repo_empty` };
    await ensureDatabase(settings);
    const empty = createKnex(settings);
    try {
      const failing = new UserRepository(empty, 5000);
      const results = await Promise.allSettled([1, 2, 3].map(() => failing.findByOpenid(newOpenid())));
      expect(results.map((r) => r.status)).to.deep.equal(['rejected', 'rejected', 'rejected']);
      for (const r of results) expect(String((r as PromiseRejectedResult).reason?.message)).to.match(/doesn't exist/);
    } finally {
      await empty.destroy();
      await dropDatabase(settings);
    }
  });

  describe('on a table that lost its unique index', () => {
    const settings = { ...testConfig().db, url: `${testConfig().db.url}_repo_dup` };
    let dup: Knex;

    before(async () => {
      await ensureDatabase(settings);
      dup = createKnex(settings);
      await migrateLatest(dup);
      await dup.schema.alterTable('users', (t) => t.dropUnique(['openid'], 'users_openid_unique'));
    });
    after(async () => {
      await dup?.destroy();
      await dropDatabase(settings);
    });

    it('answers at most two rows per openid, in a batch as alone', async () => {
      const twice = newOpenid('twice');
      const thrice = newOpenid('thrice');
      const once = newOpenid('once');
      await dup('users').insert([user(twice), user(twice), user(thrice), user(thrice), user(thrice), user(once)]);
      const repository = new UserRepository(dup, 5000);
      const batched = await Promise.all([twice, thrice, once].map((o) => repository.findByOpenid(o)));
      expect(batched.map((rows) => rows.length)).to.deep.equal([2, 2, 1]);
      expect((await repository.findByOpenid(thrice)).length).to.equal(2);
    });
  });
});
