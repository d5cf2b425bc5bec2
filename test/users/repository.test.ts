import { expect } from 'chai';
import { createKnex, dropDatabase, ensureDatabase, migrateLatest, type Knex } from '../../src/db/knex';
import type { UserRow } from '../../src/users/model';
import { UserRepository, type RowPatch } from '../../src/users/repository';
import { newOpenid, testConfig, testPhones } from '../helpers/env';
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
    repo = new UserRepository(db, 5000, testPhones());
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
      const failing = new UserRepository(empty, 5000, testPhones());
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
      const repository = new UserRepository(dup, 5000, testPhones());
      const batched = await Promise.all([twice, thrice, once].map((o) => repository.findByOpenid(o)));
      expect(batched.map((rows) => rows.length)).to.deep.equal([2, 2, 1]);
      expect((await repository.findByOpenid(thrice)).length).to.equal(2);
    });
  });
});

describe('UserRepository.updateProfile (under a row lock, on fixed SQL)', () => {
  let db: Knex;
  let repo: UserRepository;
  const used = () => (db.client as { pool: { numUsed(): number } }).pool.numUsed();
  const newUser = async () => {
    const openid = newOpenid('upd');
    await db('users').insert(user(openid));
    return (await db('users').where({ openid }).first()) as UserRow;
  };
  const read = async (id: number) => (await db('users').where({ id }).first()) as UserRow;

  before(async () => {
    db = createKnex(testConfig().db);
    await migrateLatest(db);
    repo = new UserRepository(db, 5000, testPhones());
  });
  after(async () => {
    await db.destroy();
  });

  it('sets the patched columns only, bumps the version and moves mtime forward by at least a second', async () => {
    const before = await newUser();
    const seen: unknown[] = [];
    const found = await repo.updateProfile(
      before.id,
      { phone: '2', unionid: 'u1', nick_name: undefined },
      async (c) => {
        seen.push({ ...c });
      },
    );
    expect(found).to.equal(true);
    expect(seen).to.deep.equal([{ openid: before.openid, version: 1, avatar: before.avatar }]);
    const after = await read(before.id);
    // Stored sealed, bound to the row's openid (test/users/phone-encryption.test.ts has the rest).
    expect(after.phone).to.match(/^v1\.test\./);
    expect(testPhones().open(after.phone, before.openid)).to.equal('2');
    expect(after).to.include({
      unionid: 'u1',
      nick_name: 'n',
      avatar: before.avatar,
      gender: 1,
      version: 2,
    });
    expect(after.mtime.getTime() - before.mtime.getTime()).to.be.at.least(1000);

    await repo.updateProfile(before.id, { nick_name: 'N', avatar: 'https://e.com/b', gender: 2 }, async () => {});
    expect(await read(before.id)).to.include({
      nick_name: 'N',
      avatar: 'https://e.com/b',
      gender: 2,
      phone: after.phone,
    });
    expect(used()).to.equal(0);
  });

  it('answers false for no such user, without calling beforeWrite', async () => {
    let called = false;
    expect(await repo.updateProfile(2 ** 40, { phone: '2' }, async () => void (called = true))).to.equal(false);
    expect(called).to.equal(false);
    expect(used()).to.equal(0);
  });

  it('writes nothing when beforeWrite throws, and rethrows its error', async () => {
    const before = await newUser();
    const refused = new Error('cache not invalidated');
    const err = await repo
      .updateProfile(before.id, { phone: '2' }, async () => {
        throw refused;
      })
      .catch((e: unknown) => e);
    expect(err).to.equal(refused);
    expect(await read(before.id)).to.include({ phone: '1', version: 1 });
    expect(used()).to.equal(0);
  });

  describe('beforeWrite beside the UPDATE', () => {
    // A reader that sees uncommitted changes: it tells "sent" from "committed".
    let dirty: Knex;
    const peek = async (id: number, isolation: 'READ UNCOMMITTED' | 'READ COMMITTED') => {
      await dirty.raw(`SET SESSION TRANSACTION ISOLATION LEVEL ${isolation}`);
      const [[row]] = (await dirty.raw('SELECT openid, phone, version FROM users WHERE id = ?', [id])) as [UserRow[]];
      return { phone: testPhones().open(row!.phone, row!.openid), version: row!.version };
    };
    const gated = () => {
      let open!: (err?: Error) => void;
      const gate = new Promise<void>((resolve, reject) => (open = (err) => (err ? reject(err) : resolve())));
      let entered!: () => void;
      const called = new Promise<void>((resolve) => (entered = resolve));
      return { open, called, beforeWrite: () => (entered(), gate) };
    };
    const sent = async (id: number) => {
      for (let i = 0; i < 200; i++) {
        if ((await peek(id, 'READ UNCOMMITTED')).phone === '2') return true;
        await new Promise((r) => setTimeout(r, 10));
      }
      return false;
    };

    before(() => {
      dirty = createKnex({ ...testConfig().db, poolMax: 1 });
    });
    after(async () => {
      await dirty.destroy();
    });

    it('sends the UPDATE while beforeWrite is pending, and commits it only once beforeWrite returns', async () => {
      const before = await newUser();
      const hook = gated();
      const update = repo.updateProfile(before.id, { phone: '2' }, hook.beforeWrite);
      await hook.called;
      const wasSent = await sent(before.id);
      const committedMeanwhile = await peek(before.id, 'READ COMMITTED');
      hook.open();
      expect(await update).to.equal(true);
      expect(wasSent).to.equal(true);
      expect(committedMeanwhile).to.deep.equal({ phone: '1', version: 1 });
      expect(await peek(before.id, 'READ COMMITTED')).to.deep.equal({ phone: '2', version: 2 });
      expect(used()).to.equal(0);
    });

    it('holds the transaction until a pending beforeWrite settles when the UPDATE fails, then rethrows that failure', async () => {
      const before = await newUser();
      const hook = gated();
      let settled = false;
      const tooLong = 'n'.repeat(65); // longer than users.nick_name (64): refused in strict mode
      const update = repo
        .updateProfile(before.id, { phone: '2', nick_name: tooLong }, hook.beforeWrite)
        .catch((e: unknown) => e)
        .finally(() => (settled = true));
      await hook.called;
      await new Promise((r) => setTimeout(r, 200)); // the UPDATE has been refused by now
      const heldMeanwhile = { settled, used: used() };
      hook.open();
      const err = (await update) as Error & { code?: string };
      expect(heldMeanwhile).to.deep.equal({ settled: false, used: 1 });
      expect(err.code).to.equal('ER_DATA_TOO_LONG');
      expect(await peek(before.id, 'READ UNCOMMITTED')).to.deep.equal({ phone: '1', version: 1 });
      expect(used()).to.equal(0);
    });

    it('rolls the sent UPDATE back when beforeWrite fails after it, and rethrows its error', async () => {
      const before = await newUser();
      const hook = gated();
      const update = repo.updateProfile(before.id, { phone: '2' }, hook.beforeWrite).catch((e: unknown) => e);
      await hook.called;
      const wasSent = await sent(before.id);
      const refused = new Error('redis did not confirm');
      hook.open(refused);
      expect(await update).to.equal(refused);
      expect(wasSent).to.equal(true);
      expect(await peek(before.id, 'READ UNCOMMITTED')).to.deep.equal({ phone: '1', version: 1 });
      expect(used()).to.equal(0);
    });
  });

  it('refuses a column outside the whitelist before reaching MySQL', async () => {
    const before = await newUser();
    const patch = { phone: '2', version: 99 } as unknown as RowPatch;
    const err = (await repo.updateProfile(before.id, patch, async () => {}).catch((e: unknown) => e)) as Error;
    expect(err.message).to.match(/users\.version cannot be patched/);
    expect(await read(before.id)).to.include({ phone: '1', version: 1 });
  });

  it("keeps the phone number out of a failed UPDATE's error, its sql included", async () => {
    const before = await newUser();
    const phone = '13912345678';
    const tooLong = 'n'.repeat(65); // longer than users.nick_name (64): refused in strict mode
    const err = (await repo
      .updateProfile(before.id, { phone, nick_name: tooLong }, async () => {})
      .catch((e: unknown) => e)) as Error;
    expect((err as Error & { code?: string }).code).to.equal('ER_DATA_TOO_LONG');
    expect((err as Error & { sql?: string }).sql).to.match(/^UPDATE users SET `nick_name` = \?, `phone` = \?, /);
    expect(JSON.stringify(err, Object.getOwnPropertyNames(err))).to.not.include(phone);
    expect(await read(before.id)).to.include({ phone: '1', version: 1 });
    expect(used()).to.equal(0);
  });

  it('serialises 20 concurrent updates of one user: each sees the version the previous one wrote', async () => {
    const before = await newUser();
    const versions: number[] = [];
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        repo.updateProfile(before.id, { nick_name: `n${i}` }, async ({ version }) => {
          versions.push(version);
          await new Promise((r) => setImmediate(r)); // a Redis round trip, held under the lock
        }),
      ),
    );
    expect(versions.slice().sort((a, b) => a - b)).to.deep.equal(Array.from({ length: 20 }, (_, i) => i + 1));
    expect((await read(before.id)).version).to.equal(21);
    expect(used()).to.equal(0);
  });
});
