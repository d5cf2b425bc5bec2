// Used by the knex CLI (npm run migrate, migrate:rollback, seed). The service itself applies
// the same migrations at start, from the same list, so either way records the same names.
import { loadConfig } from './src/config';
import { knexConfig } from './src/db/connection';
import { migrationSource } from './src/db/migrations';

const config = loadConfig();

export default {
  ...knexConfig(config.db),
  migrations: { migrationSource },
  seeds: { directory: './src/db/seeds', loadExtensions: ['.ts', '.js'] },
};
