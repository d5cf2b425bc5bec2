import { SingleBar } from 'cli-progress';
import mysql from 'mysql2/promise';
import { parseDatabaseUrl, type DbSettings } from '../src/db/connection';
import { createKnex, ensureDatabase, migrateLatest } from '../src/db/knex';
import { PhoneCipher, parsePhoneKeys } from '../src/users/phone-cipher';

/** The bench service's PHONE_KEYS: seeded phones are sealed with it, as the service stores them. */
export const BENCH_PHONE_KEYS = 'bench:YmVuY2gga2V5IG9mIHRoZSB1c2VyIHNlcnZpY2UhISE=';
const phones = new PhoneCipher(parsePhoneKeys(BENCH_PHONE_KEYS));

/** The n-th seeded user's openid: the harness derives every request body from it. */
export const benchOpenid = (n: number) => `bench_${n}`;

export interface SeedInfo {
  users: number;
  /** Row ids are lo..hi, one per seeded user (update picks among them). */
  lo: number;
  hi: number;
  /** Seconds spent inserting, or null when the existing rows were kept. */
  seededSeconds: number | null;
}

const NICKS = ['小明', '阿花', 'Tom', '晴天', '老王', 'Lily', '风之子', '糖糖'];
const EMOJI = ['😀', '🐱', '🌸', '🚀', '🍵', '⭐'];

function row(n: number, base: number): unknown[] {
  const created = new Date(base - n * 1000);
  return [
    benchOpenid(n),
    `${NICKS[n % NICKS.length]}${EMOJI[n % EMOJI.length]}${n}`,
    `https://thirdwx.qlogo.cn/mmopen/vi_32/bench${n.toString(36)}/132`,
    n % 2,
    phones.seal(`1${String(3_000_000_000 + n).padStart(10, '0')}`, benchOpenid(n)),
    created,
    created,
  ];
}

/**
 * Creates the bench database and its table (the service's own migrations), then makes sure
 * it holds exactly `users` seeded rows: kept when they are already there (reruns are fast),
 * otherwise the table is emptied and filled by multi-row INSERTs of `batch` rows.
 */
export async function ensureSeeded(
  db: DbSettings,
  users: number,
  opts: { reseed: boolean; batch: number; log: (line: string) => void },
): Promise<SeedInfo> {
  await ensureDatabase(db);
  const knex = createKnex(db);
  try {
    await migrateLatest(knex);
  } finally {
    await knex.destroy();
  }

  const target = parseDatabaseUrl(db.url);
  const conn = await mysql.createConnection({ ...target, charset: 'utf8mb4', timezone: 'Z' });
  try {
    await conn.query("SET time_zone = '+00:00'");
    const check = async () => {
      const [[stats]] = (await conn.query(
        'SELECT COUNT(*) AS n, MIN(id) AS lo, MAX(id) AS hi FROM users',
      )) as unknown as [{ n: number; lo: number | null; hi: number | null }[]];
      // ...and sealed with the bench key (rows seeded before phones were encrypted are not).
      const [ends] = (await conn.query('SELECT COUNT(*) AS n FROM users WHERE openid IN (?, ?) AND phone LIKE ?', [
        benchOpenid(0),
        benchOpenid(users - 1),
        'v1.bench.%',
      ])) as unknown as [{ n: number }[]];
      const ok =
        Number(stats!.n) === users &&
        Number(ends[0]!.n) === 2 &&
        stats!.lo !== null &&
        Number(stats!.hi) - Number(stats!.lo) + 1 === users;
      return { ok, lo: Number(stats!.lo), hi: Number(stats!.hi), n: Number(stats!.n) };
    };

    const before = await check();
    if (before.ok && !opts.reseed) {
      opts.log(`seed: ${users.toLocaleString('en')} users already in ${target.database}, kept (--reseed to redo)`);
      return { users, lo: before.lo, hi: before.hi, seededSeconds: null };
    }

    opts.log(
      `seed: ${target.database} has ${before.n.toLocaleString('en')} rows; inserting ${users.toLocaleString('en')} users in batches of ${opts.batch}`,
    );
    await conn.query('TRUNCATE TABLE users');
    const bar = new SingleBar({
      format: 'seed [{bar}] {percentage}% | {value}/{total} users | {rate} rows/s | ETA {eta_formatted}',
      barsize: 30,
      hideCursor: true,
      etaBuffer: 20,
      // Without a terminal (CI, a log file) print a line every few seconds instead.
      noTTYOutput: true,
      notTTYSchedule: 3000,
      stream: process.stderr,
    });
    const started = Date.now();
    const base = Date.UTC(2025, 0, 1);
    bar.start(users, 0, { rate: 0 });
    for (let from = 0; from < users; from += opts.batch) {
      const to = Math.min(users, from + opts.batch);
      const rows: unknown[][] = [];
      // Ids given, consecutive as the update bodies expect: Galera would space them by the
      // cluster size (wsrep_auto_increment_control).
      for (let n = from; n < to; n++) rows.push([n + 1, ...row(n, base)]);
      // mysql2 expands a nested array into (…),(…),… : one statement, one round trip per batch.
      await conn.query('INSERT INTO users (id, openid, nick_name, avatar, gender, phone, ctime, mtime) VALUES ?', [
        rows,
      ]);
      const seconds = (Date.now() - started) / 1000;
      bar.update(to, { rate: Math.round(to / Math.max(seconds, 0.001)) });
    }
    bar.stop();
    const seededSeconds = (Date.now() - started) / 1000;
    await conn.query('ANALYZE TABLE users');
    const after = await check();
    if (!after.ok) throw new Error(`seeding left ${after.n} rows (ids ${after.lo}..${after.hi}), expected ${users}`);
    opts.log(`seed: ${users.toLocaleString('en')} users in ${seededSeconds.toFixed(1)} s`);
    return { users, lo: after.lo, hi: after.hi, seededSeconds };
  } finally {
    await conn.end();
  }
}
