import type { Knex } from 'knex';
import * as createUsers from './20261126000000_create_users';
import * as usersIdBigint from './20261126230000_users_id_bigint';
import * as addUsersUnionid from './20261129000000_add_users_unionid';

interface Migration {
  up(db: Knex): Promise<void>;
  down(db: Knex): Promise<void>;
}

/**
 * Migrations are listed here rather than discovered on disk, so the names knex records in
 * knex_migrations are the same whether they run from TypeScript (knex CLI, tests) or from the
 * compiled dist/ (npm start): a directory scan would record `.ts` in one and `.js` in the other
 * and then refuse to run ("migration directory is corrupt").
 */
const migrations: Record<string, Migration> = {
  '20261126000000_create_users': createUsers,
  '20261126230000_users_id_bigint': usersIdBigint,
  '20261129000000_add_users_unionid': addUsersUnionid,
};

export const migrationSource: Knex.MigrationSource<string> = {
  async getMigrations() {
    return Object.keys(migrations).sort();
  },
  getMigrationName(name) {
    return name;
  },
  async getMigration(name) {
    const migration = migrations[name];
    if (!migration) throw new Error(`unknown migration ${name}`);
    return migration;
  },
};
