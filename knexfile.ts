// The knex CLI's configuration. From the repository, `npx knex migrate:latest` (knex loads this
// file through ts-node, which it knows by name); from the build, with production dependencies
// only, `npx knex migrate:latest --knexfile dist/knexfile.js`. docs/migrations.md says more.
import type { Knex } from 'knex';
import { join } from 'node:path';
import { loadConfig } from './src/config';
import { knexConfig } from './src/db/connection';
import { ensureDatabase } from './src/db/knex';
import { MIGRATION_EXTENSION, MIGRATIONS_DIRECTORY, migrationSource } from './src/db/migrations';

const command = process.argv.slice(2).find((arg) => /^[a-z]+:[a-z]+$/.test(arg)) ?? '';

/**
 * knex drops a custom migrationSource whenever `directory` is set too, and `migrate:make` reads
 * nothing but `directory`: so making a migration gets the directory, every other command gets
 * the source that records names without their extension (src/db/migrations/index.ts).
 */
function migrations(): Knex.MigratorConfig {
  if (command !== 'migrate:make') return { migrationSource };
  if (MIGRATION_EXTENSION !== 'ts') {
    throw new Error('migrations are written in TypeScript: run `npx knex migrate:make <name>` in the repository');
  }
  return { directory: MIGRATIONS_DIRECTORY, extension: 'ts', stub: join(__dirname, 'src/db/migration.stub') };
}

export default async function knexfile(): Promise<Knex.Config> {
  const config = loadConfig();
  // As `npm start` does: a fresh machine needs no CREATE DATABASE by hand. Making a file needs no database.
  if (!command.endsWith(':make')) await ensureDatabase(config.db);
  return {
    ...knexConfig(config.db),
    migrations: migrations(),
    seeds: {
      directory: join(__dirname, 'src/db/seeds'),
      extension: MIGRATION_EXTENSION,
      loadExtensions: [`.${MIGRATION_EXTENSION}`],
    },
  };
}
