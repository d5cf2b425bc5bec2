import type { Connection } from 'mysql2/promise';
import { eventually } from '../test/helpers/wait';
import { mb } from './lib';

/**
 * InnoDB's buffer pool against the bench table. With the table larger than the pool (the
 * default pool is 128 MiB; 1,000,000 bench users take about 175 MiB), every uncached lookup
 * reads pages from disk (O_DIRECT bypasses the OS cache), and the run measures the disk: the
 * MySQL floor itself fell to 0.64 of its 100,000-user figure that way, and to 0.99 once the pool
 * held the table. An operator sizes the pool to the data, so by default the bench does the
 * same for the length of the run and puts the server's own size back afterwards.
 */
export interface BufferPool {
  /** Bytes of the pool during the run. */
  pool: number;
  /** Bytes of the users table, data and indexes. */
  table: number;
  /** The server's own size, when the bench raised it. */
  raisedFrom?: number;
  /**
   * Puts the server's own size back (a no-op when nothing was raised). Never throws: a run's
   * results matter more than its cleanup, so a failure is logged with the statement to run.
   */
  restore(): Promise<void>;
}

/**
 * Sizes are rounded up to a multiple of this: a round figure that whole chunks divide on the
 * usual configurations (MariaDB sizes chunks itself since 10.8), so the server keeps the value.
 */
const STEP = 128 * 1024 * 1024;
/** Room beside the table for the adaptive hash index, the change buffer and the undo pages. */
const HEADROOM = 1.25;
/**
 * Held by a run that changed the pool: a second run on the same server would otherwise take the
 * raised size for the server's own, or shrink the pool under the first one's measurements.
 */
const LOCK = 'user_service_bench_buffer_pool';

async function scalar(conn: Connection, sql: string, params: unknown[] = []): Promise<unknown> {
  const [rows] = (await conn.query(sql, params)) as unknown as [Record<string, unknown>[]];
  return Object.values(rows[0] ?? {})[0];
}

/** Sets the pool's size and answers the size the server applied (it may round it). */
async function resize(conn: Connection, bytes: number): Promise<number> {
  await conn.query('SET GLOBAL innodb_buffer_pool_size = ?', [bytes]);
  // Older servers resize in the background and report progress here until it completes;
  // 10.11 answers the SET when it is done and leaves the status empty.
  await eventually(
    async () => {
      const [rows] = (await conn.query("SHOW STATUS LIKE 'Innodb_buffer_pool_resize_status'")) as unknown as [
        { Value: string }[],
      ];
      const status = rows[0]?.Value ?? '';
      return status === '' || /completed/i.test(status);
    },
    60_000,
    100,
  );
  return Number(await scalar(conn, 'SELECT @@innodb_buffer_pool_size'));
}

/**
 * `fit`: raise the pool to hold the users table of the connection's database when it does not,
 * and read the table once so the first round does not pay for the cold pages. `keep`: measure
 * the server as it is.
 */
export async function prepareBufferPool(
  connect: () => Promise<Connection>,
  mode: 'fit' | 'keep',
  log: (line: string) => void,
): Promise<BufferPool> {
  const conn = await connect();
  try {
    return await prepare(conn, connect, mode, log);
  } finally {
    await conn.end();
  }
}

async function prepare(
  conn: Connection,
  connect: () => Promise<Connection>,
  mode: 'fit' | 'keep',
  log: (line: string) => void,
): Promise<BufferPool> {
  const own = Number(await scalar(conn, 'SELECT @@innodb_buffer_pool_size'));
  const table = Number(
    await scalar(
      conn,
      "SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'users'",
    ),
  );
  const asItIs = { pool: own, table, restore: async () => {} };
  if (mode === 'keep') return asItIs;
  const wanted = Math.ceil((table * HEADROOM) / STEP) * STEP;
  if (own >= wanted) {
    await warm(conn, log);
    return asItIs;
  }

  // The lock lives as long as its connection, which stays open until restore().
  const holder = await connect();
  if (Number(await scalar(holder, 'SELECT GET_LOCK(?, 0)', [LOCK])) !== 1) {
    await holder.end();
    throw new Error(`another bench run holds ${LOCK} on this MySQL server: run one at a time`);
  }
  let putting: Promise<void> | undefined;
  // Once only: the end of the run and a signal may both ask.
  const putBack = () => (putting ??= restoreOwn());
  const restoreOwn = async () => {
    try {
      const applied = await resize(holder, own);
      log(`mysql: innodb_buffer_pool_size back to ${mb(applied).toFixed(0)} MiB`);
    } catch (err) {
      log(
        `mysql: could not put innodb_buffer_pool_size back (${(err as Error).message}); ` +
          `run SET GLOBAL innodb_buffer_pool_size = ${own}`,
      );
    } finally {
      await holder.end().catch(() => {});
    }
  };

  let pool: number;
  try {
    pool = await resize(holder, wanted);
  } catch (err) {
    // Without the privilege (or on a server that cannot resize) the run measures the server as
    // it is, after making sure a half-done resize is undone.
    log(`mysql: could not raise innodb_buffer_pool_size (${(err as Error).message})`);
    const now = Number(await scalar(holder, 'SELECT @@innodb_buffer_pool_size').catch(() => own));
    if (now !== own) await putBack();
    else await holder.end();
    log(`mysql: measuring with the server's ${mb(own).toFixed(0)} MiB`);
    return asItIs;
  }
  log(
    `mysql: innodb_buffer_pool_size ${mb(own).toFixed(0)} → ${mb(pool).toFixed(0)} MiB for this run (users table ${mb(table).toFixed(0)} MiB)`,
  );
  try {
    await warm(conn, log);
  } catch (err) {
    await putBack();
    throw err;
  }
  return { pool, table, raisedFrom: own, restore: putBack };
}

/** Reads both indexes a lookup walks: the openid index, then the row in the clustered index. */
async function warm(conn: Connection, log: (line: string) => void): Promise<void> {
  const started = Date.now();
  // The condition is always true (the column is NOT NULL); it makes InnoDB read every row
  // rather than count entries of the smallest index.
  await conn.query('SELECT COUNT(*) FROM users FORCE INDEX (PRIMARY) WHERE nick_name IS NOT NULL');
  await conn.query('SELECT COUNT(*) FROM users FORCE INDEX (users_openid_unique)');
  log(`mysql: users table read into the buffer pool in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
