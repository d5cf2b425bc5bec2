/**
 * The database the bench measures: `users` seeded users in `user_service_bench_<users>` (the
 * service's own migrations), and an InnoDB buffer pool that holds them.
 */
import mysql from 'mysql2/promise';
import { parseDatabaseUrl, type DbSettings } from '../src/db/connection';
import { createKnex, ensureDatabase, migrateLatest } from '../src/db/knex';
import { PhoneCipher, parsePhoneKeys } from '../src/users/phone-cipher';
import { eventually } from '../test/helpers/wait';
import { benchOpenid, log, mib } from './lib';

const NICKS = ['小明', '阿花', 'Tom', '晴天', '老王', 'Lily', '风之子', '糖糖'];
const EMOJI = ['😀', '🐱', '🌸', '🚀', '🍵', '⭐'];
const BATCH = 5000;
const INSERT = 'INSERT INTO users (id, openid, nick_name, avatar, gender, phone, ctime, mtime) VALUES ?';
// ...and sealed with the bench key (rows seeded before phones were encrypted are not).
const ENDS = "SELECT COUNT(*) FROM users WHERE openid IN (?, ?) AND phone LIKE 'v1.bench.%'";
/** The bench service's PHONE_KEYS: seeded phones are sealed with it, as the service stores them. */
export const BENCH_PHONE_KEYS = 'bench:YmVuY2gga2V5IG9mIHRoZSB1c2VyIHNlcnZpY2UhISE=';
const phones = new PhoneCipher(parsePhoneKeys(BENCH_PHONE_KEYS));

async function scalar(conn: mysql.Connection, sql: string, params: unknown[] = []): Promise<number> {
  const [rows] = (await conn.query(sql, params)) as unknown as [Record<string, unknown>[]];
  return Number(Object.values(rows[0] ?? {})[0]);
}

/**
 * Makes sure the table holds exactly `users` seeded rows, ids lo..hi: kept when they are there
 * (reruns are fast), otherwise emptied and filled by multi-row INSERTs. Answers the id range and
 * the seconds spent inserting (null when the rows were kept).
 */
export async function seed(db: DbSettings, users: number, reseed: boolean) {
  await ensureDatabase(db);
  const knex = createKnex(db);
  await migrateLatest(knex).finally(() => knex.destroy());
  const conn = await mysql.createConnection({ ...parseDatabaseUrl(db.url), charset: 'utf8mb4', timezone: 'Z' });
  try {
    await conn.query("SET time_zone = '+00:00'");
    const check = async () => {
      const of = (f: string) => scalar(conn, `SELECT ${f} FROM users`);
      const [n, lo, hi] = await Promise.all([of('COUNT(*)'), of('MIN(id)'), of('MAX(id)')]);
      const ends = [benchOpenid(0), benchOpenid(users - 1)];
      const ok = n === users && hi! - lo! + 1 === users && (await scalar(conn, ENDS, ends)) === 2;
      return { ok, n: n!, lo: lo!, hi: hi! };
    };
    const before = await check();
    if (before.ok && !reseed) {
      log(`seed: ${users.toLocaleString('en')} users already there, kept (--reseed to redo)`);
      return { lo: before.lo, hi: before.hi, seconds: null };
    }
    log(`seed: the table has ${before.n} rows; inserting ${users.toLocaleString('en')} users`);
    await conn.query('TRUNCATE TABLE users');
    const started = Date.now();
    const base = Date.UTC(2025, 0, 1);
    for (let from = 0; from < users; from += BATCH) {
      const rows = [];
      for (let n = from; n < Math.min(users, from + BATCH); n++) {
        const created = new Date(base - n * 1000);
        const phone = phones.seal(`1${String(3_000_000_000 + n).padStart(10, '0')}`, benchOpenid(n));
        const nick = `${NICKS[n % NICKS.length]}${EMOJI[n % EMOJI.length]}${n}`;
        const avatar = `https://thirdwx.qlogo.cn/mmopen/vi_32/bench${n.toString(36)}/132`;
        // Ids given, consecutive as the update bodies expect: Galera spaces them by the cluster size.
        rows.push([n + 1, benchOpenid(n), nick, avatar, n % 2, phone, created, created]);
      }
      // mysql2 expands a nested array into (…),(…),…: one statement, one round trip per batch.
      await conn.query(INSERT, [rows]);
      if ((from / BATCH) % 20 === 19) log(`seed: ${from + BATCH} of ${users}`);
    }
    const seconds = (Date.now() - started) / 1000;
    await conn.query('ANALYZE TABLE users');
    const after = await check();
    if (!after.ok) throw new Error(`seeding left ${after.n} rows (ids ${after.lo}..${after.hi}), expected ${users}`);
    log(`seed: ${users.toLocaleString('en')} users in ${seconds.toFixed(1)} s`);
    return { lo: after.lo, hi: after.hi, seconds };
  } finally {
    await conn.end();
  }
}

/** Held by a run that changed the pool: a second run would take the raised size for the server's own. */
const LOCK = 'user_service_bench_buffer_pool';
const SIZE = `SELECT data_length + index_length FROM information_schema.tables
  WHERE table_schema = DATABASE() AND table_name = 'users'`;

/**
 * `fit`: with the users table larger than InnoDB's buffer pool (the default 128 MiB; 1,000,000
 * bench users take about 200 MiB), every uncached lookup reads pages from disk (O_DIRECT
 * bypasses the OS cache) and the run measures the disk: the MySQL floor fell to 0.64 of its
 * 100,000-user figure that way, and to 0.99 once the pool held the table. An operator sizes the
 * pool to the data, so the bench raises it for the run (to a multiple of 128 MiB, with a quarter
 * to spare for the adaptive hash index and undo pages), reads the table into it, and `restore`
 * puts the server's own size back; it never throws. `keep`: measure the server as it is.
 */
export async function bufferPool(connect: () => Promise<mysql.Connection>, mode: string) {
  const conn = await connect();
  const own = await scalar(conn, 'SELECT @@innodb_buffer_pool_size');
  const table = await scalar(conn, SIZE);
  const wanted = Math.ceil((table * 1.25) / 2 ** 27) * 2 ** 27;
  const result = { text: `InnoDB buffer pool ${mib(own)}, users table ${mib(table)}`, restore: async () => {} };
  // The lock lives as long as the connection that holds it, open until restore().
  const holder = mode === 'fit' && own < wanted ? await connect() : undefined;
  const resize = async (bytes: number) => {
    await holder!.query('SET GLOBAL innodb_buffer_pool_size = ?', [bytes]);
    // Older servers resize in the background and report progress; 10.11 answers when it is done.
    const status = "SHOW STATUS LIKE 'Innodb_buffer_pool_resize_status'";
    const done = async () =>
      /^$|completed/i.test(((await holder!.query(status))[0] as { Value: string }[])[0]?.Value ?? '');
    await eventually(done, 60_000);
    return scalar(holder!, 'SELECT @@innodb_buffer_pool_size');
  };
  try {
    if (holder && (await scalar(holder, 'SELECT GET_LOCK(?, 0)', [LOCK])) !== 1) {
      await holder.end();
      throw new Error(`another bench run holds ${LOCK} on this MySQL server: run one at a time`);
    }
    if (holder) {
      const pool = await resize(wanted).catch(async (err: Error) => {
        log(`mysql: could not raise innodb_buffer_pool_size (${err.message}); measuring the server as it is`);
        if ((await scalar(holder, 'SELECT @@innodb_buffer_pool_size')) !== own) await resize(own);
        return own;
      });
      if (pool !== own)
        result.text = `InnoDB buffer pool ${mib(pool)} (raised from ${mib(own)} for the run), users table ${mib(table)}`;
      let putting: Promise<void> | undefined;
      result.restore = () =>
        (putting ??= resize(own)
          .then((size) => log(`mysql: innodb_buffer_pool_size back to ${mib(size)}`))
          .catch((err: Error) => log(`mysql: ${err.message}; run SET GLOBAL innodb_buffer_pool_size = ${own}`))
          .finally(() => holder.end().catch(() => {})));
      log(`mysql: ${result.text}`);
    }
    if (mode === 'fit') {
      // Both indexes a lookup walks; the always-true condition makes InnoDB read every row.
      await conn.query('SELECT COUNT(*) FROM users FORCE INDEX (PRIMARY) WHERE nick_name IS NOT NULL');
      await conn.query('SELECT COUNT(*) FROM users FORCE INDEX (users_openid_unique)');
    }
  } catch (err) {
    await result.restore();
    throw err;
  } finally {
    await conn.end();
  }
  return result;
}
