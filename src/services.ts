import type { Config } from './config';
import { createKnex, type Knex } from './db/knex';
import type { Logger } from './logger';
import { Metrics, type PoolStats } from './ops/metrics';
import { Readiness } from './ops/readiness';
import { connectRedis, createRedis, type Redis } from './redis/client';
import { keyLayout } from './redis/keys';
import { UserCache } from './users/cache';
import { dateFormatter } from './users/model';
import { UserRepository } from './users/repository';
import { UserService } from './users/service';
import { WechatClient } from './wechat/client';
import { SessionKeyStore } from './wechat/session-keys';

export interface Services {
  db: Knex;
  redis: Redis;
  users: UserService;
  metrics: Metrics;
  readiness: Readiness;
  close(): Promise<void>;
}

/** tarn's pool behind knex: what /metrics reports as db_pool_connections. */
interface TarnPool {
  numUsed(): number;
  numFree(): number;
  numPendingAcquires(): number;
  numPendingCreates(): number;
  max: number;
}

function poolStats(db: Knex): PoolStats | undefined {
  const pool = (db.client as { pool?: TarnPool }).pool;
  if (!pool) return undefined;
  return {
    used: pool.numUsed(),
    free: pool.numFree(),
    pendingAcquires: pool.numPendingAcquires(),
    pendingCreates: pool.numPendingCreates(),
    max: pool.max,
  };
}

/** The composition root: builds every long-lived object from the configuration, once. */
export async function createServices(config: Config, logger: Logger): Promise<Services> {
  const dbLog = logger.child({ component: 'knex' });
  // knex's messages can embed a stack; keep only the first line.
  const firstLine = (message: unknown) => String(message).split('\n', 1)[0];
  const db = createKnex(config.db, {
    warn: (m) => dbLog.warn(firstLine(m)),
    error: (m) => dbLog.error(firstLine(m)),
    debug: (m) => dbLog.debug(firstLine(m)),
  });
  const metrics = new Metrics(() => poolStats(db));
  const redis = createRedis(config.redis);
  // Without a listener an ioredis 'error' event would crash the process; the cache degrades instead.
  let lastRedisError = '';
  redis.on('error', (err: Error) => {
    metrics.storeError('redis', 'connection');
    if (err.message !== lastRedisError) logger.warn({ err: err.message }, 'redis error');
    lastRedisError = err.message;
  });
  redis.on('ready', () => {
    lastRedisError = '';
    logger.info('redis ready');
  });
  const firstError = await connectRedis(redis);
  if (firstError)
    logger.warn({ err: firstError.message }, 'redis not reachable at start; serving from MySQL until it is');

  const keys = keyLayout(config.redis.keyPrefix);
  const cache = new UserCache(redis, keys, config.cache.ttlSeconds, {
    hit: () => metrics.cacheHits.inc(),
    miss: () => metrics.cacheMisses.inc(),
    error: (op, err) => {
      metrics.cacheError(op);
      logger.debug({ op, err: (err as Error)?.message }, 'cache operation failed');
    },
  });
  const users = new UserService({
    repository: new UserRepository(db, config.db.queryTimeoutMs),
    cache,
    wechat: new WechatClient(config.wechat),
    sessionKeys: new SessionKeyStore(redis, keys, config.wechat.sessionKeyTtlSeconds),
    formatDate: dateFormatter(config.timeZone),
    onStoreError: (store, op, err) => {
      metrics.storeError(store, op);
      logger.debug({ store, op, err: (err as Error)?.message }, 'store operation failed');
    },
  });
  const readiness = new Readiness(
    {
      mysql: () => db.raw('SELECT 1').timeout(config.db.queryTimeoutMs),
      redis: () => redis.ping(),
    },
    config.readyTimeoutMs,
    logger,
  );

  return {
    db,
    redis,
    users,
    metrics,
    readiness,
    async close() {
      // QUIT lets replies already on their way arrive; it fails fast (no offline queue, command
      // timeout) when Redis is gone, and then the socket is simply dropped.
      await redis.quit().catch(() => redis.disconnect());
      await db.destroy();
    },
  };
}
