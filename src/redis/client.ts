import Redis, { type RedisOptions } from 'ioredis';

export type { Redis };

export interface RedisSettings {
  url: string;
  commandTimeoutMs: number;
}

/**
 * ioredis defaults suit a job queue, not a cache in front of a database: commands issued while
 * disconnected wait in an offline queue, each may be retried 20 times and none ever times out
 * (ioredis issues #634, #1194). A cache call here must fail within commandTimeoutMs so the
 * caller treats it as a miss and goes to MySQL.
 */
export function redisOptions(settings: RedisSettings): RedisOptions {
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: settings.commandTimeoutMs,
    connectTimeout: Math.max(1000, settings.commandTimeoutMs * 4),
    // Keep reconnecting for ever, at most every 2 s: the cache must come back on its own.
    retryStrategy: (attempt) => Math.min(attempt * 100, 2000),
    enableAutoPipelining: true,
  };
}

export function createRedis(settings: RedisSettings): Redis {
  return new Redis(settings.url, redisOptions(settings));
}

/** The first connection attempt; a failure is reported but not fatal, ioredis keeps retrying. */
export async function connectRedis(redis: Redis): Promise<Error | null> {
  try {
    await redis.connect();
    return null;
  } catch (err) {
    return err as Error;
  }
}
