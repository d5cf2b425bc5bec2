import knexFactory, { type Knex } from 'knex';
import { knexConfig, parseDatabaseUrl, type DbLog, type DbSettings } from './connection';
import { migrationSource } from './migrations';

export type { Knex };

export function createKnex(settings: DbSettings, log?: DbLog): Knex {
  return knexFactory(knexConfig(settings, true, log));
}

/** CREATE DATABASE IF NOT EXISTS, so a fresh machine needs no manual step before `npm start`. */
export async function ensureDatabase(settings: DbSettings): Promise<void> {
  const { database } = parseDatabaseUrl(settings.url);
  const admin = knexFactory(knexConfig(settings, false));
  try {
    await admin.raw('CREATE DATABASE IF NOT EXISTS ?? CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci', [database]);
  } finally {
    await admin.destroy();
  }
}

export async function migrateLatest(db: Knex): Promise<string[]> {
  const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
  return applied;
}

export async function dropDatabase(settings: DbSettings): Promise<void> {
  const { database } = parseDatabaseUrl(settings.url);
  const admin = knexFactory(knexConfig(settings, false));
  try {
    await admin.raw('DROP DATABASE IF EXISTS ??', [database]);
  } finally {
    await admin.destroy();
  }
}
