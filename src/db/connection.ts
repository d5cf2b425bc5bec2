import type { Knex } from 'knex';
import { EvictingMySQL2Client } from './failover';

export interface DbSettings {
  url: string;
  poolMax: number;
  acquireTimeoutMs: number;
}

export interface MysqlTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** Splits DATABASE_URL into the parts mysql2 wants; the database name is kept apart
 * because it may not exist yet when the process starts. */
export function parseDatabaseUrl(url: string): MysqlTarget {
  const u = new URL(url);
  const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (!database) throw new Error('DATABASE_URL names no database');
  return {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 3306,
    user: decodeURIComponent(u.username || 'root'),
    password: decodeURIComponent(u.password),
    database,
  };
}

/**
 * knex settings shared by the service, the knex CLI (knexfile.ts) and the tests.
 * The defaults of knex/tarn (60 s acquire timeout) and mysql2 (10 s connect timeout) would
 * make a MySQL outage look like a hang; these bounds turn it into a prompt error instead.
 */
export interface DbLog {
  warn(message: string): void;
  error(message: string): void;
  debug(message: string): void;
}

export function knexConfig(settings: DbSettings, withDatabase = true, log?: DbLog): Knex.Config {
  const { database, ...server } = parseDatabaseUrl(settings.url);
  return {
    // knex's mysql2 client, evicting a connection on the error that left it unusable.
    client: EvictingMySQL2Client as unknown as typeof Knex.Client,
    connection: {
      ...server,
      ...(withDatabase ? { database } : {}),
      charset: 'utf8mb4',
      // Times are stored in UTC and formatted per TIME_ZONE at the edge.
      timezone: 'Z',
      connectTimeout: Math.min(settings.acquireTimeoutMs, 10_000),
      supportBigNumbers: true,
    },
    pool: {
      min: 0,
      max: settings.poolMax,
      acquireTimeoutMillis: settings.acquireTimeoutMs,
      createTimeoutMillis: settings.acquireTimeoutMs,
      propagateCreateError: true,
      afterCreate(
        conn: { query: (sql: string, cb: (err: Error | null) => void) => void },
        done: (err: Error | null, conn: unknown) => void,
      ) {
        conn.query("SET time_zone = '+00:00'", (err) => done(err, conn));
      },
    } as Knex.PoolConfig,
    acquireConnectionTimeout: settings.acquireTimeoutMs,
    // knex would otherwise prefix a failed query's error message with its SQL, values filled
    // in: a phone number from an INSERT or UPDATE would reach the log with the error.
    compileSqlOnError: false,
    // knex prints pool warnings with console.warn unless given a logger.
    ...(log ? { log: { warn: log.warn, error: log.error, debug: log.debug, deprecate: log.warn } } : {}),
  };
}
