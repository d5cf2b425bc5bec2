import type { Config } from './config';
import { createKnex, type Knex } from './db/knex';
import type { Logger } from './logger';
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
  close(): Promise<void>;
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
  const redis = createRedis(config.redis);
  // Without a listener an ioredis 'error' event would crash the process; the cache degrades instead.
  let lastRedisError = '';
  redis.on('error', (err: Error) => {
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
    error: (op, err) => logger.debug({ op, err: (err as Error)?.message }, 'cache operation failed'),
  });
  const users = new UserService({
    repository: new UserRepository(db, config.db.queryTimeoutMs),
    cache,
    wechat: new WechatClient(config.wechat),
    sessionKeys: new SessionKeyStore(redis, keys, config.wechat.sessionKeyTtlSeconds),
    formatDate: dateFormatter(config.timeZone),
  });

  return {
    db,
    redis,
    users,
    async close() {
      redis.disconnect();
      await db.destroy();
    },
  };
}
