import { rm } from 'node:fs/promises';
import { dropDatabase, ensureDatabase } from '../src/db/knex';
import { installFetchCheck } from './helpers/contract';
import { testConfig } from './helpers/env';
import { deleteByPrefix, testRedis } from './helpers/stores';

// Every answer of a watched service that a test fetches is held to its /openapi.json.
installFetchCheck();

/** Root hooks: the run's database is dropped and its Redis keys deleted, pass or fail. */
export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(30_000);
    await ensureDatabase(testConfig().db);
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(30_000);
    const config = testConfig();
    await dropDatabase(config.db);
    await rm(config.media.dir, { recursive: true, force: true });
    const redis = testRedis();
    try {
      await deleteByPrefix(redis, config.redis.keyPrefix);
    } finally {
      redis.disconnect();
    }
  },
};
