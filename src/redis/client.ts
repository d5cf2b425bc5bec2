import Redis, { Cluster, type ClusterOptions, type RedisOptions } from 'ioredis';
import { coalesceWrites } from './coalesce';

export type { Redis, Cluster };
/** A single node or a Redis Cluster: everything here works on either. */
export type RedisClient = Redis | Cluster;

export interface RedisSettings {
  url: string;
  commandTimeoutMs: number;
  /** host:port of Redis Cluster nodes; empty for a single node at `url`. */
  clusterNodes: string[];
  /** host:port of Redis Sentinels; when set, the primary is the one they name `sentinelName`. */
  sentinels?: string[];
  sentinelName?: string;
}

/**
 * ioredis defaults suit a job queue, not a cache in front of a database: commands issued while
 * disconnected wait in an offline queue, each may be retried 20 times and none ever times out
 * (ioredis issues #634, #1194). A cache call here must fail within commandTimeoutMs so the
 * caller treats it as a miss and goes to MySQL.
 */
export function redisOptions(settings: Pick<RedisSettings, 'commandTimeoutMs'>): RedisOptions {
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: settings.commandTimeoutMs,
    connectTimeout: Math.max(1000, settings.commandTimeoutMs * 4),
    // Keep reconnecting for ever, at most every 2 s: the cache must come back on its own.
    retryStrategy: (attempt) => Math.min(attempt * 100, 2000),
    // Off, measured: each auto-pipeline held its commands and replies until the whole batch
    // (and the one before it) had answered. About 1 KB per request outlived two young
    // collections and was promoted; under the old-space cap that meant a full collection every
    // 0.5 s of load and ~15 % more CPU per cached login (ioredis issues #1239, #1608). Writes
    // are batched per event-loop turn by coalesceWrites instead, without holding the replies.
    // Callers that miss together still meet in one MySQL read: a read is shared until its fill
    // (or its "no such user") has landed in Redis (users/service.ts).
    enableAutoPipelining: false,
  };
}

function clusterOptions(settings: RedisSettings, password?: string): ClusterOptions {
  const { retryStrategy, enableOfflineQueue, lazyConnect, enableAutoPipelining, ...node } = redisOptions(settings);
  return {
    lazyConnect,
    enableOfflineQueue,
    enableAutoPipelining,
    clusterRetryStrategy: retryStrategy,
    // A cluster that is down or failing over answers like a Redis that is down: at once.
    retryDelayOnClusterDown: 0,
    retryDelayOnTryAgain: 0,
    slotsRefreshTimeout: Math.max(1000, settings.commandTimeoutMs * 4),
    redisOptions: { ...node, ...(password ? { password } : {}) },
  };
}

/**
 * A primary found through Redis Sentinel. On a lost connection ioredis asks the sentinels again
 * (and, with failoverDetector, drops the connection as soon as they announce +switch-master),
 * so a promoted replica is followed without a restart; until then commands fail at once, as
 * for a Redis that is down. REDIS_URL lends its password and database number.
 */
function sentinelOptions(settings: RedisSettings): RedisOptions {
  const url = new URL(settings.url);
  const base = redisOptions(settings);
  return {
    ...base,
    sentinels: clusterNodes(settings.sentinels ?? []),
    name: settings.sentinelName,
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    db: Number(url.pathname.replace(/^\//, '') || 0),
    // Ask again often while a failover runs: each try is one question to a sentinel and one
    // refused connect, and the promoted replica is reached within half a second of its promotion
    // (with the 2 s ceiling of a lone Redis, 3-7 s after the kill were measured, not 2-4).
    retryStrategy: (attempt: number) => Math.min(attempt * 50, 500),
    sentinelRetryStrategy: (attempt: number) => Math.min(attempt * 50, 500),
    sentinelCommandTimeout: base.connectTimeout,
    failoverDetector: true,
  };
}

/** `host:port` strings (as config holds them) to what ioredis's Cluster takes. */
export function clusterNodes(nodes: string[]): { host: string; port: number }[] {
  return nodes.map((hostPort) => {
    const i = hostPort.lastIndexOf(':');
    return { host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) };
  });
}

export function createRedis(settings: RedisSettings): RedisClient {
  let client: RedisClient;
  if (settings.clusterNodes.length > 0) {
    const password = new URL(settings.url).password || undefined;
    client = new Cluster(clusterNodes(settings.clusterNodes), clusterOptions(settings, password));
  } else if (settings.sentinels?.length) {
    client = new Redis(sentinelOptions(settings));
  } else {
    client = new Redis(settings.url, redisOptions(settings));
  }
  coalesceWrites(client);
  return client;
}

/** The first connection attempt; a failure is reported but not fatal, ioredis keeps retrying. */
export async function connectRedis(redis: RedisClient): Promise<Error | null> {
  try {
    await redis.connect();
    return null;
  } catch (err) {
    return err as Error;
  }
}
