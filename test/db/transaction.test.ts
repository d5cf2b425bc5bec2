import { expect } from 'chai';
import { createKnex, migrateLatest, type Knex } from '../../src/db/knex';
import { inTransaction } from '../../src/db/transaction';
import { ServiceError } from '../../src/errors';
import { newOpenid, testConfig } from '../helpers/env';
import { eventually, timed } from '../helpers/wait';

type Row = { id: number; nick_name: string; phone: string; version: number };

/** How a rejected promise failed (and that it did). */
async function failure(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

describe('inTransaction (one pooled connection, BEGIN ... COMMIT)', function () {
  this.timeout(30_000);
  let db: Knex;
  const used = (k: Knex = db): number => (k.client as { pool: { numUsed(): number } }).pool.numUsed();

  const newRow = async (): Promise<number> => {
    const openid = newOpenid('txn');
    await db('users').insert({ openid, nick_name: 'before', avatar: 'https://e.com/a', gender: 1, phone: '1' });
    return ((await db('users').where({ openid }).first('id')) as { id: number }).id;
  };
  const row = async (id: number): Promise<Row> =>
    (await db('users').where({ id }).first('id', 'nick_name', 'phone', 'version')) as Row;
  const rename = (id: number, nick: string) => (query: Parameters<Parameters<typeof inTransaction>[2]>[0]) =>
    query('UPDATE users SET nick_name = ? WHERE id = ?', [nick, id]);

  before(async () => {
    db = createKnex(testConfig().db);
    await migrateLatest(db);
  });
  after(async () => {
    await db.destroy();
  });

  it("commits what the function wrote and answers the function's value", async () => {
    const id = await newRow();
    const answer = await inTransaction(db, 5000, async (query) => {
      const header = await rename(id, 'after')(query);
      const rows = await query<{ nick_name: string }[]>('SELECT nick_name FROM users WHERE id = ?', [id]);
      return { affected: header.affectedRows, seen: rows[0]!.nick_name };
    });
    expect(answer).to.deep.equal({ affected: 1, seen: 'after' });
    expect((await row(id)).nick_name).to.equal('after');
    expect(used()).to.equal(0);
  });

  it('rolls back, and rethrows the very error, when the function throws', async () => {
    const id = await newRow();
    const thrown = new ServiceError('unavailable', 'the cache is unavailable, try again');
    const err = await failure(
      inTransaction(db, 5000, async (query) => {
        await rename(id, 'after')(query);
        throw thrown;
      }),
    );
    expect(err).to.equal(thrown);
    expect((await row(id)).nick_name).to.equal('before');
    expect(used()).to.equal(0);
  });

  it("rolls back and rejects with the driver's error when a statement fails, with no value anywhere in it", async () => {
    const id = await newRow();
    const phone = '13912345678';
    const err = await failure(
      inTransaction(db, 5000, async (query) => {
        await rename(id, 'after')(query);
        await query('UPDATE users SET phone = ? WHERE no_such_column = ?', [phone, id]);
      }),
    );
    expect(err.code).to.equal('ER_BAD_FIELD_ERROR');
    expect(err.message).to.match(/no_such_column/);
    // mysql2 sets err.sql to the statement with its values filled in: the template instead.
    expect((err as { sql?: string }).sql).to.equal('UPDATE users SET phone = ? WHERE no_such_column = ?');
    expect(JSON.stringify(err, Object.getOwnPropertyNames(err))).to.not.include(phone);
    expect(await row(id)).to.include({ nick_name: 'before', phone: '1' });
    expect(used()).to.equal(0);
    // The connection went back healthy: the next transaction on the pool commits.
    await inTransaction(db, 5000, rename(id, 'later'));
    expect((await row(id)).nick_name).to.equal('later');
  });

  it('refuses a statement sent after the transaction ended', async () => {
    const id = await newRow();
    let leaked: Parameters<Parameters<typeof inTransaction>[2]>[0] | undefined;
    await inTransaction(db, 5000, async (query) => {
      leaked = query;
    });
    const err = await failure(rename(id, 'late')(leaked!));
    expect(err.message).to.match(/already ended/);
    expect((await row(id)).nick_name).to.equal('before');
  });

  it('refuses a statement started once the function has settled, before COMMIT or ROLLBACK is answered', async () => {
    for (const outcome of ['commit', 'rollback'] as const) {
      const id = await newRow();
      // failure() takes the rejection at once: one left unhandled until later would warn.
      let late: ReturnType<typeof failure> | undefined;
      const done = inTransaction(db, 5000, async (query) => {
        // Not awaited: its answer comes after the function has settled, before COMMIT's or
        // ROLLBACK's, and only then is the late UPDATE started.
        void query('SELECT 1').then(() => {
          late = failure(rename(id, 'late')(query));
        });
        if (outcome === 'rollback') throw new Error('refused');
      });
      await done.catch(() => undefined);
      expect(late, `${outcome}: the late statement was started`).to.not.equal(undefined);
      expect((await late!).message).to.match(/already ended/);
      expect((await row(id)).nick_name).to.equal('before');
      expect(used()).to.equal(0);
    }
  });

  describe('statement timeout', () => {
    // One connection: a timed-out connection handed out again would hold up the next caller.
    let one: Knex;
    // For calls meant to succeed: far from anything a loaded CI machine takes.
    const ample = 5000;
    const threads = async () =>
      ((await db.raw('SELECT ID AS id FROM information_schema.PROCESSLIST'))[0] as { id: number }[]).map((r) => r.id);
    const threadOf = (query: Parameters<Parameters<typeof inTransaction>[2]>[0]) =>
      query<{ id: number }[]>('SELECT CONNECTION_ID() AS id').then((rows) => rows[0]!.id);

    /**
     * Runs fn while another connection holds row id's lock, and lets the lock go after it even
     * when fn fails (an open transaction would hold up the pool's destroy and the run's DROP).
     */
    const whileLocked = async <T>(id: number, fn: () => Promise<T>): Promise<T> => {
      const holder = createKnex(testConfig().db);
      try {
        const trx = await holder.transaction();
        try {
          await trx.raw('SELECT id FROM users WHERE id = ? FOR UPDATE', [id]);
          return await fn();
        } finally {
          await trx.commit();
        }
      } finally {
        await holder.destroy();
      }
    };

    before(() => {
      one = createKnex({ ...testConfig().db, poolMax: 1 });
    });
    // A connection ready before each test, so that what a test times is the statement, not a
    // connect; the test before may have left the pool empty by timing out.
    beforeEach(async () => {
      await inTransaction(one, ample, async (query) => query('SELECT 1'));
    });
    after(async () => {
      await one.destroy();
    });

    it('rejects within about the timeout, closes that connection, and the pool serves the next call at once', async () => {
      const timeout = 1000;
      const { value: sleeper, ms } = await timed(async () => {
        let thread = 0;
        const err = await failure(
          inTransaction(one, timeout, async (query) => {
            thread = await threadOf(query);
            // Longer than the bound below: waiting the statement out would fail it.
            await query('SELECT SLEEP(4)');
          }),
        );
        return { thread, err };
      });
      expect(sleeper.err.code).to.equal('PROTOCOL_SEQUENCE_TIMEOUT');
      expect(sleeper.thread).to.be.above(0);
      expect(ms).to.be.within(timeout - 10, timeout + 2500);
      expect(used(one)).to.equal(0);

      // Not queued behind the SLEEP still running on the old connection: a new one.
      const next = await timed(() => inTransaction(one, ample, threadOf));
      expect(next.value).to.be.above(0).and.not.equal(sleeper.thread);
      expect(next.ms).to.be.below(ample);
      expect(used(one)).to.equal(0);

      // And the server lets the old one go once its statement ends.
      await eventually(async () => !(await threads()).includes(sleeper.thread), 10_000, 100);
    });

    it('gives up on a row lock held elsewhere, writes nothing, and the row is free once the holder commits', async () => {
      const id = await newRow();
      const timeout = 600;
      let thread = 0;
      await whileLocked(id, async () => {
        const waiting = await timed(() =>
          failure(
            inTransaction(one, timeout, async (query) => {
              thread = await threadOf(query);
              await rename(id, 'blocked')(query);
            }),
          ),
        );
        expect(waiting.value.code).to.equal('PROTOCOL_SEQUENCE_TIMEOUT');
        expect(thread).to.be.above(0);
        expect(waiting.ms).to.be.within(timeout - 10, timeout + 2500);
        expect(used(one)).to.equal(0);
      });
      // The abandoned UPDATE may now get the lock and run before the server finds its client
      // gone; it must never commit. Once its thread has ended, the row shows what it left.
      await eventually(async () => !(await threads()).includes(thread), 10_000, 100);
      expect(await row(id)).to.include({ nick_name: 'before', version: 1 });

      const later = await timed(() => inTransaction(one, ample, rename(id, 'after')));
      expect(later.ms).to.be.below(ample);
      expect(await row(id)).to.include({ nick_name: 'after', version: 1 });
      expect(used(one)).to.equal(0);
    });

    it('bounds in the server, too, the wait of a statement abandoned on a row lock', async () => {
      const id = await newRow();
      // Under a second, so that the client gives up before the server's lock wait (1 s) ends.
      const timeout = 600;
      await whileLocked(id, async () => {
        let thread = 0;
        const err = await failure(
          inTransaction(one, timeout, async (query) => {
            thread = await threadOf(query);
            await query('SELECT id FROM users WHERE id = ? FOR UPDATE', [id]);
          }),
        );
        expect(err.code).to.equal('PROTOCOL_SEQUENCE_TIMEOUT');
        expect(thread).to.be.above(0);
        // The lock is still held: only the lock wait timeout can end the orphaned statement,
        // which would otherwise keep its server connection for the default 50 s.
        await eventually(async () => !(await threads()).includes(thread), 4000, 100);
      });
      expect(used(one)).to.equal(0);
    });

    it('sets the lock wait timeout once per connection, not once per transaction', async () => {
      type Query = Parameters<Parameters<typeof inTransaction>[2]>[0];
      // Com_set_option counts the session's SET statements.
      const setsAndWait = async (query: Query) => {
        const [sets] = await query<{ Value: string }[]>('SHOW SESSION STATUS LIKE ?', ['Com_set_option']);
        const [wait] = await query<{ wait: number }[]>('SELECT @@SESSION.innodb_lock_wait_timeout AS wait');
        return { sets: Number(sets!.Value), wait: Number(wait!.wait) };
      };
      const first = await inTransaction(one, 2500, setsAndWait);
      const second = await inTransaction(one, 2500, setsAndWait);
      expect(first.wait).to.equal(3);
      expect(second).to.deep.equal(first);
      expect((await inTransaction(one, ample, setsAndWait)).wait).to.equal(5);
    });

    // One timer serves the whole transaction (src/db/transaction.ts, Statements): each statement
    // still gets the full budget from its own start, however long the ones before it took.
    describe('one clock for the transaction, each statement timed from its start', () => {
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

      it('gives each statement in turn the whole timeout', async () => {
        const { ms } = await timed(() =>
          inTransaction(one, 1000, async (query) => {
            await query('SELECT SLEEP(0.7)');
            await query('SELECT SLEEP(0.7)');
          }),
        );
        expect(ms).to.be.at.least(1400);
        expect(used(one)).to.equal(0);
      });

      it('lets the clock run out while nothing is pending, harmlessly, and still times the next statement', async () => {
        let before = 0;
        let after = -1;
        await inTransaction(one, 600, async (query) => {
          before = await threadOf(query);
          await sleep(900);
          after = await threadOf(query);
        });
        expect(after).to.equal(before); // the same connection: nothing was disposed

        const { value: err, ms } = await timed(() =>
          failure(
            inTransaction(one, 600, async (query) => {
              await query('SELECT 1');
              await sleep(900);
              await query('SELECT SLEEP(4)');
            }),
          ),
        );
        expect(err.code).to.equal('PROTOCOL_SEQUENCE_TIMEOUT');
        expect(ms).to.be.within(1490, 3000);
      });

      it('times a statement queued behind another from when that one is answered', async () => {
        const { ms } = await timed(() =>
          inTransaction(one, 800, async (query) => {
            await Promise.all([query('SELECT SLEEP(0.5)'), query('SELECT SLEEP(0.5)')]);
          }),
        );
        expect(ms).to.be.at.least(1000);
      });

      it('does not let a statement sent later extend one that is stuck', async () => {
        const { value: err, ms } = await timed(() =>
          failure(
            inTransaction(one, 600, async (query) => {
              const stuck = query('SELECT SLEEP(4)');
              await sleep(400);
              await Promise.all([stuck, query('SELECT 1')]);
            }),
          ),
        );
        expect(err.code).to.equal('PROTOCOL_SEQUENCE_TIMEOUT');
        expect(ms).to.be.below(950);
      });

      it('leaves nothing to time out behind a statement refused before it was sent', async () => {
        const unescapable = {
          toSqlString: () => {
            throw new TypeError('no SQL for this value');
          },
        };
        const thread = await inTransaction(one, 600, async (query) => {
          const err = await failure(query('SELECT ?', [unescapable]));
          expect(err).to.be.instanceOf(TypeError);
          await sleep(900);
          return threadOf(query);
        });
        expect(thread).to.be.above(0);
        expect(used(one)).to.equal(0);
      });
    });
  });

  it('serialises concurrent read-modify-writes of one row under SELECT ... FOR UPDATE (no lost write)', async () => {
    const id = await newRow();
    await Promise.all(
      Array.from({ length: 20 }, () =>
        inTransaction(db, 5000, async (query) => {
          const [current] = await query<{ version: number }[]>('SELECT version FROM users WHERE id = ? FOR UPDATE', [
            id,
          ]);
          // Read here, written there: without the lock two callers would write the same value.
          await query('UPDATE users SET version = ? WHERE id = ?', [current!.version + 1, id]);
        }),
      ),
    );
    expect((await row(id)).version).to.equal(21);
    expect(used()).to.equal(0);
  });
});
