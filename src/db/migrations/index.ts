import type { Knex } from 'knex';
import { readdirSync } from 'node:fs';
import { extname, join } from 'node:path';

/** Where `npx knex migrate:make` writes and where the service and the CLI read migrations. */
export const MIGRATIONS_DIRECTORY = __dirname;

/**
 * `ts` when this module runs from source (ts-node for the knex CLI, tsx for the tests),
 * `js` when it runs from the build (npm start, the production knexfile).
 */
export const MIGRATION_EXTENSION = extname(__filename).slice(1);

/**
 * A migration is any other file of this directory with this module's own extension:
 * `.ts` in source, `.js` in dist/ (never `.d.ts` nor `.js.map`, which tsc writes beside them).
 * knex records it under its name without the extension, so knex_migrations holds the same
 * names whether the CLI ran the TypeScript or the service ran the compiled JavaScript; knex's
 * own directory source records `x.ts` in one and `x.js` in the other and then refuses to run
 * ("migration directory is corrupt").
 */
export function migrationNames(): string[] {
  const suffix = `.${MIGRATION_EXTENSION}`;
  return readdirSync(MIGRATIONS_DIRECTORY)
    .filter((file) => file.endsWith(suffix) && !file.endsWith(`.d${suffix}`))
    .map((file) => file.slice(0, -suffix.length))
    .filter((name) => name !== 'index')
    .sort();
}

/** Shaped like the specs of knex's own directory source: the CLI's migrate:list prints `file`. */
interface MigrationSpec {
  file: string;
}

export const migrationSource: Knex.MigrationSource<MigrationSpec> = {
  async getMigrations() {
    return migrationNames().map((file) => ({ file }));
  },
  getMigrationName({ file }) {
    return file;
  },
  async getMigration({ file }): Promise<Knex.Migration> {
    if (!migrationNames().includes(file)) throw new Error(`unknown migration ${file}`);
    // require, not import(): the tests' hook (tsx/cjs) serves require alone, and import() of a
    // .ts file would bypass it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(join(MIGRATIONS_DIRECTORY, `${file}.${MIGRATION_EXTENSION}`)) as Knex.Migration;
  },
};
