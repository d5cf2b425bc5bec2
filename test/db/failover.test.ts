import { expect } from 'chai';
import { createKnex, ensureDatabase, migrateLatest, type Knex } from '../../src/db/knex';
import { commitOutcomeUnknown, connectionUnusable, retryable, type RetryPolicy } from '../../src/db/failover';
import { inTransaction, type TxQuery } from '../../src/db/transaction';
import { newOpenid, testConfig } from '../helpers/env';
import { TestMariadbServer } from '../helpers/mariadb-server';
import { eventually } from '../helpers/wait';

/** How a rejected promise failed (and that it did). */
async function failure(promise: Promise<unknown>): Promise<Error & { code?: string; errno?: number }> {
  try {
    await promise;
  } catch (err) {
    return err as Error & { code?: string; errno?: number };
  }
  throw new Error('expected a rejection');
}

const connectionId = async (query: TxQuery): Promise<number> =>
  (await query<{ id: number }[]>('SELECT CONNECTION_ID() AS id'))[0]!.id;

describe('database failover: what is retried, what is evicted', function () {
  this.timeout(60_000);
  let db: Knex;
  let admin: Knex;
  const retries: unknown[] = [];
  const retry: RetryPolicy = { attempts: 3, baseDelayMs: 20, onRetry: (err) => retries.push(err) };

  const newRow = async (): Promise<number> => {
    const openid = newOpenid('fo');
    await db('users').insert({ openid, nick_name: 'before', avatar: 'https://e.com/a', gender: 1, phone: '1' });
    return ((await db('users').where({ openid }).first('id')) as { id: number }).id;
  };
  const nick = async (id: number): Promise<string> =>
    ((await db('users').where({ id }).first('nick_name')) as { nick_name: string }).nick_name;

  before(async () => {
    // knex warns of each connection its pool drops: expected here.
    const quiet = { warn() {}, error() {}, debug() {} };
    db = createKnex(testConfig().db, quiet);
    admin = createKnex(testConfig().db, quiet);
    await migrateLatest(db);
  });
  after(async () => {
    await db.destroy();
    await admin.destroy();
  });
  beforeEach(() => {
    retries.length = 0;
  });

  it('classifies errors: deadlocks and lost connections are retried, a COMMIT without an answer never', () => {
    expect(retryable({ errno: 1213, sqlState: '40001' })).to.equal(true);
    expect(retryable({ code: 'PROTOCOL_CONNECTION_LOST', fatal: true })).to.equal(true);
    expect(retryable({ code: 'ECONNREFUSED' })).to.equal(true);
    expect(retryable({ errno: 1047, sqlState: '08S01' })).to.equal(true);
    expect(retryable({ errno: 1062, sqlState: '23000' })).to.equal(false);
    expect(retryable({ code: 'PROTOCOL_SEQUENCE_TIMEOUT' })).to.equal(false);
    // A Galera node outside the primary component stays up and refuses every statement.
    expect(connectionUnusable({ errno: 1047, sqlState: '08S01' })).to.equal(true);
    expect(connectionUnusable({ errno: 1213, sqlState: '40001' })).to.equal(false);
  });

  it('runs a transaction again whole after a deadlock (1213), so both crossing writers succeed', async () => {
    const [a, b] = [await newRow(), await newRow()];
    // Each locks its first row, then waits for the other's: InnoDB picks a victim at once.
    let arrived = 0;
    let release!: () => void;
    const bothLocked = new Promise<void>((r) => (release = r));
    const cross = (first: number, second: number, name: string) => async (query: TxQuery) => {
      await query('UPDATE users SET nick_name = ? WHERE id = ?', [name, first]);
      if (++arrived === 2) release();
      await bothLocked;
      await query('UPDATE users SET nick_name = ? WHERE id = ?', [name, second]);
    };
    const results = await Promise.allSettled([
      inTransaction(db, 10_000, cross(a, b, 'x'), retry),
      inTransaction(db, 10_000, cross(b, a, 'y'), retry),
    ]);
    expect(results.map((r) => r.status)).to.deep.equal(['fulfilled', 'fulfilled']);
    expect(retries.map((e) => (e as { errno?: number }).errno)).to.deep.equal([1213]);
    // The victim ran again after the other committed: it wrote both rows last.
    expect(await nick(a)).to.equal(await nick(b));
  });

  it('runs it again whole, on another connection, when its connection is lost before COMMIT', async () => {
    const id = await newRow();
    const version = async () => ((await db('users').where({ id }).first('version')) as { version: number }).version;
    const before = await version();
    const seen: number[] = [];
    await inTransaction(
      db,
      10_000,
      async (query) => {
        seen.push(await connectionId(query));
        await query('UPDATE users SET nick_name = ?, version = version + 1 WHERE id = ?', ['after', id]);
        if (seen.length === 1) await admin.raw('KILL CONNECTION ?', [seen[0]]);
        await query('SELECT 1');
      },
      retry,
    );
    expect(seen).to.have.length(2);
    expect(seen[1]).to.not.equal(seen[0]);
    expect(await nick(id)).to.equal('after');
    // Applied once: the killed attempt's UPDATE was rolled back by the server.
    expect(await version()).to.equal(before + 1);
  });

  it('evicts a connection lost under a plain query: the pool never lends it again', async () => {
    const [[{ id }]] = (await db.raw('SELECT CONNECTION_ID() AS id')) as [[{ id: number }]];
    await admin.raw('KILL CONNECTION ?', [id]);
    const ids = new Set<number>();
    for (let i = 0; i < 5; i++) {
      const answer = await db.raw('SELECT CONNECTION_ID() AS id').catch(() => null);
      if (answer) ids.add((answer as [[{ id: number }]])[0][0].id);
    }
    expect([...ids]).to.not.include(id);
  });

  describe('a COMMIT sent and never answered', () => {
    let server: TestMariadbServer;
    let remote: Knex;
    before(async () => {
      server = await TestMariadbServer.create();
      const settings = { ...testConfig().db, url: `${server.url}/failover_test` };
      await ensureDatabase(settings);
      remote = createKnex(settings, { warn() {}, error() {}, debug() {} });
      await migrateLatest(remote);
    });
    after(async () => {
      await remote?.destroy();
      await server?.destroy();
    });

    it('is not run again: the error says the outcome is unknown (it may well have been applied)', async () => {
      await remote('users').insert({
        openid: newOpenid('fo'),
        nick_name: 'n',
        avatar: 'https://e.com/a',
        gender: 1,
        phone: '1',
      });
      let attempts = 0;
      const err = await failure(
        inTransaction(
          remote,
          10_000,
          async (query) => {
            attempts++;
            await query('UPDATE users SET nick_name = ?', ['after']);
            // The COMMIT goes into the socket of a stopped server, which then dies: no answer.
            server.pause();
            await eventually(() => server.stopped(), 5000, 5);
            setTimeout(() => void server.crash(), 200);
          },
          retry,
        ),
      );
      expect(commitOutcomeUnknown(err), err.message).to.equal(true);
      expect(attempts).to.equal(1);
      expect(retries).to.have.length(0);
    });
  });
});
