import Redis from 'ioredis';
import { createKnex, type Knex } from '../../src/db/knex';
import { keyLayout } from '../../src/redis/keys';
import { testConfig } from './env';

/** Direct handles on the test database and Redis, for arranging and inspecting state. */
export function testDb(): Knex {
  return createKnex(testConfig().db);
}

export function testRedis(url = testConfig().redis.url): Redis {
  return new Redis(url, { maxRetriesPerRequest: 1 });
}

export const testKeys = () => keyLayout(testConfig().redis.keyPrefix);

/** Deletes every key under a prefix (SCAN, never KEYS on a shared server). */
export async function deleteByPrefix(redis: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    if (keys.length) deleted += await redis.del(...keys);
  } while (cursor !== '0');
  return deleted;
}
