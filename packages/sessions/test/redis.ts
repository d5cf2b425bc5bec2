import { randomBytes } from 'node:crypto';
import Redis, { Cluster } from 'ioredis';
import type { RedisClient } from '../src';

/** A key prefix of this run: every key the tests write is under it, and has a TTL. */
export const PREFIX = `test:sessions-pkg:${process.pid}_${randomBytes(3).toString('hex')}:`;

/**
 * A client on the test Redis: TEST_REDIS_URL (default the local one), or the Redis Cluster of
 * TEST_REDIS_CLUSTER_NODES (host:port,...) when the suite runs against one.
 */
export function testRedis(): RedisClient {
  const nodes = (process.env.TEST_REDIS_CLUSTER_NODES ?? '').split(',').filter(Boolean);
  if (nodes.length) {
    return new Cluster(
      nodes.map((n) => ({ host: n.slice(0, n.lastIndexOf(':')), port: Number(n.slice(n.lastIndexOf(':') + 1)) })),
      { redisOptions: { maxRetriesPerRequest: 1 } },
    );
  }
  return new Redis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0', { maxRetriesPerRequest: 1 });
}

/** Deletes every key under PREFIX (SCAN on every master). */
export async function cleanUp(redis: RedisClient): Promise<void> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 500);
      cursor = next;
      for (const key of keys) await node.del(key);
    } while (cursor !== '0');
  }
}

let counter = 0;
/** A fresh token-shaped string. */
export function newToken(): string {
  counter += 1;
  return `${randomBytes(18).toString('base64url').slice(0, 24)}${String(counter).padStart(8, '0')}`;
}
