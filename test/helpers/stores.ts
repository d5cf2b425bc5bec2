import Redis, { Cluster } from 'ioredis';
import { createKnex, type Knex } from '../../src/db/knex';
import { clusterNodes, type RedisClient } from '../../src/redis/client';
import { keyLayout } from '../../src/redis/keys';
import { testConfig } from './env';
import { eventually } from './wait';

/**
 * The SELECTs of the users table that `db` sends from now on, until stop(): how tests count
 * what reached MySQL.
 */
export function watchUserSelects(db: Knex): { sql: string[]; stop(): void } {
  const sql: string[] = [];
  const listener = (q: { sql: string }) => {
    if (/^select .* from `?users`?\b/i.test(q.sql)) sql.push(q.sql);
  };
  db.on('query', listener);
  return { sql, stop: () => db.off('query', listener) };
}

/** Direct handles on the test database and Redis, for arranging and inspecting state. */
export function testDb(): Knex {
  return createKnex(testConfig().db);
}

/**
 * A client on the run's Redis: the shared single node, or the test cluster when the suite
 * runs against one (TEST_REDIS_CLUSTER_NODES). `failFast` gives it the service's options.
 */
export function testRedis(opts: { failFast?: boolean } = {}): RedisClient {
  const config = testConfig();
  const options = opts.failFast
    ? { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 300 }
    : { maxRetriesPerRequest: 1 };
  if (config.redis.clusterNodes.length) {
    return new Cluster(clusterNodes(config.redis.clusterNodes), {
      enableOfflineQueue: !opts.failFast,
      redisOptions: options,
    });
  }
  return new Redis(config.redis.url, options);
}

/**
 * Resolves once every node answers a PING. A fail-fast client refuses commands until it is
 * connected, and a cluster's nodes connect on their first command, after the cluster is ready.
 */
export async function untilAnswering(redis: RedisClient): Promise<void> {
  await eventually(
    async () => {
      if (redis.status !== 'ready') return false;
      const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
      try {
        await Promise.all(nodes.map((node) => node.ping()));
        return true;
      } catch {
        return false;
      }
    },
    10_000,
    50,
  );
}

export const testKeys = () => keyLayout(testConfig().redis.keyPrefix);

/** Deletes every key under a prefix (SCAN on every master, never KEYS on a shared server). */
export async function deleteByPrefix(redis: RedisClient, prefix: string): Promise<number> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  let deleted = 0;
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      // One DEL per key: in a cluster the keys of one node still span many slots.
      for (const key of keys) deleted += await node.del(key);
    } while (cursor !== '0');
  }
  return deleted;
}
