import type { Connection } from 'mysql2/promise';
import { mb, sleep } from './lib';

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
  /** Puts the server's own size back (a no-op when nothing was raised). */
  restore(): Promise<void>;
}

/** InnoDB resizes in whole chunks; 128 MiB is the default chunk and a round figure. */
const STEP = 128 * 1024 * 1024;
/** Room beside the table for the adaptive hash index, the change buffer and the undo pages. */
const HEADROOM = 1.25;

async function scalar(conn: Connection, sql: string): Promise<number> {
  const [rows] = (await conn.query(sql)) as unknown as [Record<string, unknown>[]];
  return Number(Object.values(rows[0]!)[0]);
}

async function resize(conn: Connection, bytes: number): Promise<void> {
  await conn.query('SET GLOBAL innodb_buffer_pool_size = ?', [bytes]);
  // The resize runs in the background; the variable shows the new size once it is done.
  for (let i = 0; i < 600; i++) {
    if ((await scalar(conn, 'SELECT @@innodb_buffer_pool_size')) === bytes) return;
    await sleep(100);
  }
  throw new Error(`innodb_buffer_pool_size did not reach ${bytes} bytes within 60 s`);
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
  const own = await scalar(conn, 'SELECT @@innodb_buffer_pool_size');
  const table = await scalar(
    conn,
    "SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'users'",
  );
  const noop = { pool: own, table, restore: async () => {} };
  if (mode === 'keep') return noop;
  const wanted = Math.ceil((table * HEADROOM) / STEP) * STEP;
  if (own < wanted) {
    try {
      await resize(conn, wanted);
    } catch (err) {
      // Without the privilege (or on a server that cannot resize) the run measures the server as it is.
      log(
        `mysql: could not raise innodb_buffer_pool_size (${(err as Error).message}); measuring with ${mb(own).toFixed(0)} MiB`,
      );
      return noop;
    }
    log(
      `mysql: innodb_buffer_pool_size ${mb(own).toFixed(0)} → ${mb(wanted).toFixed(0)} MiB for this run (users table ${mb(table).toFixed(0)} MiB)`,
    );
  }
  const started = Date.now();
  // Both indexes a lookup walks: the openid index, then the row in the clustered index.
  await conn.query('SELECT COUNT(*) FROM users FORCE INDEX (PRIMARY) WHERE nick_name IS NOT NULL');
  await conn.query('SELECT COUNT(*) FROM users FORCE INDEX (users_openid_unique)');
  log(`mysql: users table read into the buffer pool in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (own >= wanted) return noop;
  return {
    pool: wanted,
    table,
    raisedFrom: own,
    // A connection of its own: the run takes minutes, and the first one is long closed.
    restore: async () => {
      const again = await connect();
      try {
        await resize(again, own);
      } finally {
        await again.end();
      }
      log(`mysql: innodb_buffer_pool_size back to ${mb(own).toFixed(0)} MiB`);
    },
  };
}
