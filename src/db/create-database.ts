// `npm run db:create`: CREATE DATABASE IF NOT EXISTS for DATABASE_URL, before the knex CLI runs.
import { loadConfig } from '../config';
import { ensureDatabase } from './knex';

ensureDatabase(loadConfig().db).then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`could not create the database: ${err.message}\n`);
    process.exit(1);
  },
);
