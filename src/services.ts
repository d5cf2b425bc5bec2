import { requirePhoneKeys, type Config } from './config';
import { DEFAULT_RETRY, type RetryPolicy } from './db/failover';
import { createKnex, type Knex } from './db/knex';
import type { Logger } from './logger';
import { Metrics, type PoolStats } from './ops/metrics';
import { Readiness } from './ops/readiness';
import { RedisBreaker } from './redis/breaker';
import { connectRedis, createRedis, type RedisClient } from './redis/client';
import { DiskMediaStore, type MediaStore } from './media/store';
import { MediaSweeper } from './media/sweep';
import { keyLayout, type KeyLayout } from './redis/keys';
import { SessionStore } from './sessions/store';
import { UserCache } from './users/cache';
import { ProfileFlows } from './users/flows';
import { ContentCheck } from './users/content';
import { AccountRights } from './users/rights';
import { dateFormatter } from './users/model';
import { PhoneCipher } from './users/phone-cipher';
import { UserRepository } from './users/repository';
import { UserService } from './users/service';
import { AccessTokenProvider } from './wechat/access-token';
import { WechatClient } from './wechat/client';
import { PhoneNumberApi } from './wechat/phone-number';
import { SecurityApi } from './wechat/security';
import { SessionKeyStore } from './wechat/session-keys';

export interface Services {
  db: Knex;
  redis: RedisClient;
  keys: KeyLayout;
  breaker: RedisBreaker;
  sessions: SessionStore;
  users: UserService;
  /** WeChat's phone-number and avatar flows (bindPhone, avatar). */
  flows: ProfileFlows;
  /** deleteAccount, exportData, and what WeChat's authorization pushes take back. */
  rights: AccountRights;
  /** WeChat's content check of nicknames and avatars; its image verdicts come by the push. */
  content: ContentCheck;
  media: MediaStore;
  /** Removes avatar files no user references (MEDIA_SWEEP_INTERVAL_MS). */
  sweeper: MediaSweeper;
  metrics: Metrics;
  readiness: Readiness;
  close(): Promise<void>;
}

/** Seams for tests that need to watch or slow the database layer (never to replace MySQL). */
export interface ServiceOverrides {
  repository?: (db: Knex, queryTimeoutMs: number, phones: PhoneCipher, retry: RetryPolicy) => UserRepository;
}

/**
 * A file this young is never swept: an upload's write and the update storing its URL are a
 * decode and a transaction apart (seconds), on whichever instance shares the disk.
 */
const SWEEP_GRACE_MS = 60_000;

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
export async function createServices(
  config: Config,
  logger: Logger,
  overrides: ServiceOverrides = {},
): Promise<Services> {
  // First: without keys in production nothing is opened (the caller reports the ConfigError).
  const phones = new PhoneCipher(requirePhoneKeys(config), config.phone.memoSize);
  if (config.phone.development) {
    logger.warn(
      { PHONE_KEYS: 'unset' },
      'PHONE_KEYS is not set: phone numbers are encrypted with the published development key (refused in production)',
    );
  }
  const dbLog = logger.child({ component: 'knex' });
  // knex's messages can embed a stack; keep only the first line.
  const firstLine = (message: unknown) => String(message).split('\n', 1)[0];
  const db = createKnex(config.db, {
    warn: (m) => dbLog.warn(firstLine(m)),
    error: (m) => dbLog.error(firstLine(m)),
    debug: (m) => dbLog.debug(firstLine(m)),
  });
  const metrics = new Metrics(() => poolStats(db), config.workers > 1);

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

  const breaker = new RedisBreaker(config.redis.breakerCooldownMs, (err) => {
    metrics.breakerOpens.inc();
    logger.warn({ err: (err as Error)?.message }, 'redis not answering: cache bypassed for a while');
  });
  metrics.breakerSource = () => breaker.isOpen;
  const keys = keyLayout(config.redis.keyPrefix);
  // A reader holds a row at most a query timeout (twice, for safety) or a minute.
  const tombstoneMs = Math.max(60_000, 2 * config.db.queryTimeoutMs);
  const ttls = { profileSeconds: config.cache.ttlSeconds, tombstoneMs, absentMs: config.cache.absentTtlMs };
  const cache = new UserCache(redis, keys, ttls, breaker, {
    hit: () => metrics.cacheHits.inc(),
    miss: () => metrics.cacheMisses.inc(),
    error: (op, err) => {
      metrics.cacheError(op);
      logger.debug({ op, err: (err as Error)?.message }, 'cache operation failed');
    },
  });
  const sessions = new SessionStore(redis, keys, config.sessions, breaker);
  // One WeChat access token for every process and instance, for every WeChat server API.
  const accessTokens = new AccessTokenProvider(
    config.wechat,
    redis,
    keys,
    breaker,
    logger.child({ component: 'wechat' }),
    { refusalBackoffMs: config.wechat.tokenRefusalBackoffMs },
  );
  const content = new ContentCheck({
    api: new SecurityApi(config.wechat, accessTokens),
    redis,
    keys,
    breaker,
    settings: config.content,
    logger: logger.child({ component: 'content-check' }),
    count: (kind, verdict) => metrics.contentCheck(kind, verdict),
  });
  const formatDate = dateFormatter(config.timeZone);
  const retry: RetryPolicy = {
    ...DEFAULT_RETRY,
    onRetry: (err) => metrics.dbRetry((err as { errno?: number })?.errno === 1213 ? 'deadlock' : 'connection'),
  };
  const repository = (overrides.repository ?? ((k, t, p, r) => new UserRepository(k, t, p, r)))(
    db,
    config.db.queryTimeoutMs,
    phones,
    retry,
  );
  const users: UserService = new UserService({
    content,
    repository,
    phones,
    cache,
    sessions,
    wechat: new WechatClient(config.wechat),
    sessionKeys: new SessionKeyStore(redis, keys, config.wechat.sessionKeyTtlSeconds, breaker),
    formatDate,
    logger,
    onStoreError: (store, op, err) => {
      metrics.storeError(store, op);
      logger.debug({ store, op, err: (err as Error)?.message }, 'store operation failed');
    },
    // flows is built below (it updates through users); only an update, later, calls this.
    onAvatarReplaced: (userId, replaced) => flows.releaseAvatar(userId, replaced),
  });
  const media = new DiskMediaStore(config.media.dir, config.media.publicBaseUrl);
  const flows: ProfileFlows = new ProfileFlows({
    users,
    phones: new PhoneNumberApi(config.wechat, accessTokens),
    media,
    limits: config.media,
    avatarsOf: (ids) => repository.avatarsOf(ids),
    formatDate,
    logger,
    content,
  });
  const rights = new AccountRights({ users, media, logger });
  const sweeper = new MediaSweeper(
    media,
    {
      folder: 'avatar',
      intervalMs: config.media.sweepIntervalMs,
      batch: config.media.sweepBatch,
      graceMs: SWEEP_GRACE_MS,
      referenced: (keys) => flows.referencedAvatars(keys),
    },
    logger.child({ component: 'media' }),
  );
  sweeper.start();
  // glibc's malloc keeps what each decode thread freed (RSS only grows with uploads) unless
  // told otherwise at start: package.json's config.malloc_env, the systemd unit. Said in
  // production only, where it matters and where nobody counts warnings of a test run.
  const glibc = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header
    ?.glibcVersionRuntime;
  if (config.env === 'production' && glibc && !process.env.MALLOC_MMAP_THRESHOLD_) {
    logger.warn(
      { MALLOC_ARENA_MAX: 2, MALLOC_MMAP_THRESHOLD_: 131072 },
      'glibc malloc without a fixed mmap threshold: avatar decodes will keep RSS high; start with these (docs/limits.md)',
    );
  }
  const readiness = new Readiness(
    {
      mysql: () => db.raw('SELECT 1').timeout(config.db.queryTimeoutMs),
      redis: () => redis.ping(),
    },
    config.readyTimeoutMs,
    logger,
  );
  metrics.readySource = async () => (await readiness.report()).status === 'ready';

  return {
    db,
    redis,
    keys,
    breaker,
    sessions,
    users,
    flows,
    rights,
    content,
    media,
    sweeper,
    metrics,
    readiness,
    async close() {
      await sweeper.stop();
      // QUIT lets replies already on their way arrive; it fails fast (no offline queue, command
      // timeout) when Redis is gone, and then the socket is simply dropped.
      await redis.quit().catch(() => redis.disconnect());
      await db.destroy();
    },
  };
}
