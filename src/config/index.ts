import Joi from 'joi';
import { availableParallelism } from 'node:os';
import defaults from '../../config/default.json';
import development from '../../config/development.json';
import production from '../../config/production.json';
import test from '../../config/test.json';
import { MAX_PROXY_HOPS } from '../http/client-ip';
import { MAX_SESSIONS_PER_USER } from '../sessions/limits';
import { isSteadyZone } from '../users/model';
import { DEVELOPMENT_KEY_TEXT, isDevelopmentKey, parsePhoneKeys, type PhoneKey } from '../users/phone-cipher';

/**
 * The whole configuration of one process. Files under config/ hold defaults per NODE_ENV,
 * keyed by the same names as the environment variables that override them, so an operator
 * reads one table (README) and never has to learn a second naming scheme.
 */
export interface Config {
  env: string;
  port: number;
  host: string;
  db: {
    url: string;
    poolMax: number;
    acquireTimeoutMs: number;
    queryTimeoutMs: number;
  };
  redis: {
    url: string;
    keyPrefix: string;
    commandTimeoutMs: number;
    breakerCooldownMs: number;
    clusterNodes: string[];
    /** host:port of Redis Sentinels; empty unless the primary is found through Sentinel. */
    sentinels: string[];
    /** The master name the sentinels monitor (REDIS_SENTINEL_NAME). */
    sentinelName: string;
  };
  wechat: {
    appid: string;
    secret: string;
    apiBase: string;
    timeoutMs: number;
    sessionKeyTtlSeconds: number;
    /** How long every process remembers WeChat's refusal of an access token (0: not at all). */
    tokenRefusalBackoffMs: number;
  };
  /**
   * WeChat's message push (/wechat/push): off while `token` is ''. `aesKeys` decrypt the secure
   * mode's messages, the current EncodingAESKey first, then the previous one during a rotation.
   */
  push: { token: string; aesKeys: string[] };
  cache: { ttlSeconds: number; absentTtlMs: number };
  timeZone: string;
  logLevel: string;
  bodyLimit: string;
  authMode: 'openid' | 'token';
  /** Headers a trusted gateway (WeChat Cloud Run) sets to the caller's ids; '' when none. */
  identity: { trustedOpenidHeader: string; trustedUnionidHeader: string };
  sessions: { ttlSeconds: number; idleSeconds: number; maxPerUser: number };
  rateLimit: { windowSeconds: number; ipPoints: number; openidPoints: number; localKeys: number };
  /** Proxy hops in front of the service (TRUST_PROXY: false = 0, true = 1); see http/client-ip.ts. */
  trustProxy: number;
  /** json, pretty (pino-pretty), or auto: pretty in development when stdout is a terminal. */
  logFormat: 'json' | 'pretty' | 'auto';
  /** After SIGTERM, how long requests in flight may take before the process gives up on them. */
  shutdownGraceMs: number;
  /** After SIGTERM, how long /readyz answers 503 while the service still serves (the load balancer leaves). */
  shutdownDelayMs: number;
  /** The same shutdown signal again within this is the echo of a group-delivered one, not "exit now". */
  shutdownRepeatMs: number;
  /** Longest /readyz waits for each store before calling it down. */
  readyTimeoutMs: number;
  /** Service processes (node:cluster); 1 runs without a primary. */
  workers: number;
  /** Bounds on what one process accepts from the network (docs/limits.md). */
  http: {
    maxInflight: number;
    maxConnections: number;
    headersTimeoutMs: number;
    requestTimeoutMs: number;
    keepAliveTimeoutMs: number;
    maxHeaderSize: number;
  };
  /** The operations listener (/metrics, /readyz, /docs): never the public port. */
  ops: { port: number; host: string };
  media: {
    /** Where uploaded avatars are stored (avatar/<name>); shared by every instance. */
    dir: string;
    /** The URL base clients reach this service at: avatar URLs are <base>/media/avatar/<name>. */
    publicBaseUrl: string;
    avatarMaxBytes: number;
    /** Uploads read or worked on at once, per process and per user (docs/limits.md). */
    uploadsMax: number;
    uploadsPerUser: number;
    /** Uploads one user may start a minute, per process (0: no pace). */
    uploadsPerUserPerMinute: number;
    /** A body slower than this over 5 s is cut (408). */
    uploadMinBytesPerSecond: number;
    /** The most a decode may hold, estimated from the image's header. */
    decodeMaxBytes: number;
    /** The orphan sweep: every `sweepIntervalMs` (0: never), at most `sweepBatch` files a pass. */
    sweepIntervalMs: number;
    sweepBatch: number;
  };
  /** WeChat's content check of nicknames and avatars (users/content.ts). */
  content: {
    enabled: boolean;
    review: 'accept' | 'refuse';
    failure: 'open' | 'closed';
    cacheTtlSeconds: number;
  };
  /**
   * PHONE_KEYS parsed: the first seals users.phone, all of them open it. `development` when
   * PHONE_KEYS is unset outside production and the published development key stands in; no
   * keys when it is unset in production, where whatever reads or writes phones must refuse to
   * start (requirePhoneKeys). The knex CLI loads this configuration too and needs no keys.
   */
  phone: { keys: PhoneKey[]; development: boolean; memoSize: number };
}

const byEnv: Record<string, Record<string, unknown>> = { development, production, test };

const timeZone = Joi.string().custom((value: string) => {
  // Intl is the source of truth for zone names; it throws RangeError on unknown ones. A steady
  // zone is known without it, and its process never pays for ICU's data (users/model.ts).
  if (!isSteadyZone(value)) new Intl.DateTimeFormat('en', { timeZone: value });
  return value;
}, 'IANA time zone');

const positiveInt = Joi.number().integer().min(1);

// An HTTP header name (RFC 9110 token), or '' for none.
const headerName = Joi.string()
  .allow('')
  .pattern(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/)
  .messages({ 'string.pattern.base': '{{#label}} must be an HTTP header name' });

const schema = Joi.object({
  PORT: Joi.number().integer().min(0).max(65535).required(),
  HOST: Joi.string().required(),
  DATABASE_URL: Joi.string()
    .uri({ scheme: ['mysql', 'mysql2'] })
    .required(),
  DB_POOL_MAX: positiveInt.required(),
  DB_ACQUIRE_TIMEOUT_MS: positiveInt.required(),
  DB_QUERY_TIMEOUT_MS: positiveInt.required(),
  REDIS_URL: Joi.string()
    .uri({ scheme: ['redis', 'rediss'] })
    .required(),
  REDIS_KEY_PREFIX: Joi.string().allow('').max(64).required(),
  REDIS_COMMAND_TIMEOUT_MS: positiveInt.required(),
  WECHAT_APPID: Joi.string().allow('').required(),
  WECHAT_SECRET: Joi.string().allow('').required(),
  WECHAT_API_BASE: Joi.string()
    .uri({ scheme: ['http', 'https'] })
    .required(),
  WECHAT_TIMEOUT_MS: positiveInt.required(),
  WECHAT_SESSION_KEY_TTL_SECONDS: positiveInt.required(),
  WECHAT_TOKEN_REFUSAL_BACKOFF_MS: Joi.number().integer().min(0).max(600_000).required(),
  CACHE_TTL_SECONDS: positiveInt.required(),
  CACHE_ABSENT_TTL_MS: positiveInt.required(),
  TIME_ZONE: timeZone.required(),
  LOG_LEVEL: Joi.string().valid('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent').required(),
  BODY_LIMIT: Joi.string()
    .pattern(/^\d+(b|kb|mb)$/i)
    .required(),
  REDIS_BREAKER_COOLDOWN_MS: positiveInt.required(),
  AUTH_MODE: Joi.string().valid('openid', 'token').required(),
  TRUSTED_OPENID_HEADER: headerName.required(),
  TRUSTED_UNIONID_HEADER: headerName.required(),
  SESSION_TTL_SECONDS: positiveInt.required(),
  SESSION_IDLE_SECONDS: positiveInt.required(),
  SESSION_MAX_PER_USER: positiveInt.max(MAX_SESSIONS_PER_USER).required(),
  RATE_LIMIT_WINDOW_SECONDS: positiveInt.required(),
  RATE_LIMIT_IP: Joi.number().integer().min(0).required(),
  RATE_LIMIT_OPENID: Joi.number().integer().min(0).required(),
  RATE_LIMIT_LOCAL_KEYS: Joi.number().integer().min(100).max(1_000_000).required(),
  TRUST_PROXY: Joi.alternatives(Joi.boolean(), Joi.number().integer().min(0).max(MAX_PROXY_HOPS)).required(),
  REDIS_CLUSTER_NODES: Joi.string()
    .allow('')
    .pattern(/^\s*[^\s:,]+:\d{1,5}\s*(,\s*[^\s:,]+:\d{1,5}\s*)*$/)
    .messages({ 'string.pattern.base': '{{#label}} must be host:port[,host:port...]' })
    .required(),
  REDIS_SENTINELS: Joi.string()
    .allow('')
    .pattern(/^\s*[^\s:,]+:\d{1,5}\s*(,\s*[^\s:,]+:\d{1,5}\s*)*$/)
    .messages({ 'string.pattern.base': '{{#label}} must be host:port[,host:port...]' })
    .required(),
  REDIS_SENTINEL_NAME: Joi.string().allow('').max(128).required(),
  LOG_FORMAT: Joi.string().valid('json', 'pretty', 'auto').required(),
  SHUTDOWN_GRACE_MS: positiveInt.required(),
  SHUTDOWN_DELAY_MS: Joi.number().integer().min(0).max(600_000).required(),
  SHUTDOWN_REPEAT_MS: Joi.number().integer().min(0).max(60_000).required(),
  READY_TIMEOUT_MS: positiveInt.required(),
  WORKERS: Joi.alternatives(Joi.number().integer().min(1).max(64), Joi.string().valid('auto')).required(),
  MAX_INFLIGHT: positiveInt.required(),
  MAX_CONNECTIONS: positiveInt.required(),
  HTTP_HEADERS_TIMEOUT_MS: positiveInt.required(),
  // Node refuses a headers timeout longer than the request timeout.
  HTTP_REQUEST_TIMEOUT_MS: positiveInt.min(Joi.ref('HTTP_HEADERS_TIMEOUT_MS')).required(),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: positiveInt.required(),
  HTTP_MAX_HEADER_SIZE: Joi.number().integer().min(1024).max(65536).required(),
  OPS_PORT: Joi.number().integer().min(0).max(65535).required(),
  OPS_HOST: Joi.string().allow('').required(),
  // An avatar URL (base + /media/avatar/<name>, ~40 characters) must fit the 512 of the column.
  PUBLIC_BASE_URL: Joi.string()
    .uri({ scheme: ['http', 'https'] })
    .max(400)
    .pattern(/^[^?#]*$/)
    .messages({ 'string.pattern.base': '{{#label}} may not have a query or a fragment' })
    .required(),
  MEDIA_DIR: Joi.string().min(1).required(),
  // WeChat's own rules for the message push settings: Token 3-32 letters and digits,
  // EncodingAESKey 43 characters of base64 (32 bytes once WeChat's '=' is added).
  WECHAT_PUSH_TOKEN: Joi.string()
    .allow('')
    .pattern(/^[A-Za-z0-9]{3,32}$/)
    .messages({ 'string.pattern.base': '{{#label}} must be 3-32 letters and digits' })
    .required(),
  WECHAT_PUSH_AES_KEY: Joi.string()
    .allow('')
    .pattern(/^[A-Za-z0-9+/]{43}$/)
    .messages({ 'string.pattern.base': '{{#label}} must be 43 characters of base64' })
    .when('WECHAT_PUSH_TOKEN', {
      is: '',
      then: Joi.valid('').messages({ 'any.only': '{{#label}} needs WECHAT_PUSH_TOKEN' }),
    })
    .when('WECHAT_APPID', {
      is: '',
      then: Joi.valid('').messages({ 'any.only': '{{#label}} needs WECHAT_APPID (the secure mode checks it)' }),
    })
    .required(),
  WECHAT_PUSH_AES_KEY_PREVIOUS: Joi.string()
    .allow('')
    .pattern(/^[A-Za-z0-9+/]{43}$/)
    .messages({ 'string.pattern.base': '{{#label}} must be 43 characters of base64' })
    .when('WECHAT_PUSH_AES_KEY', {
      is: '',
      then: Joi.valid('').messages({ 'any.only': '{{#label}} needs WECHAT_PUSH_AES_KEY' }),
    })
    .required(),
  CONTENT_CHECK: Joi.string()
    .valid('auto', 'on', 'off')
    .when('WECHAT_APPID', {
      is: '',
      then: Joi.invalid('on').messages({ 'any.invalid': '{{#label}} on needs WECHAT_APPID' }),
    })
    .required(),
  CONTENT_REVIEW: Joi.string().valid('accept', 'refuse').required(),
  CONTENT_CHECK_FAILURE: Joi.string().valid('open', 'closed').required(),
  CONTENT_CACHE_TTL_SECONDS: positiveInt.max(30 * 86_400).required(),
  AVATAR_MAX_BYTES: Joi.number()
    .integer()
    .min(1024)
    .max(20 * 1024 * 1024)
    .required(),
  AVATAR_UPLOADS_MAX: positiveInt.max(1024).required(),
  AVATAR_UPLOADS_PER_USER: positiveInt.max(Joi.ref('AVATAR_UPLOADS_MAX')).required(),
  AVATAR_UPLOADS_PER_USER_PER_MINUTE: Joi.number().integer().min(0).max(6000).required(),
  AVATAR_UPLOAD_MIN_BYTES_PER_S: Joi.number().integer().min(0).required(),
  AVATAR_DECODE_MAX_BYTES: Joi.number().integer().min(1_000_000).required(),
  MEDIA_SWEEP_INTERVAL_MS: Joi.number().integer().min(0).required(),
  MEDIA_SWEEP_BATCH: positiveInt.max(100_000).required(),
  // Parsed (and checked) by phoneKeys(): the message must never echo the key material.
  PHONE_KEYS: Joi.string().allow('').required(),
  PHONE_MEMO_SIZE: Joi.number().integer().min(0).max(1_000_000).required(),
}).unknown(true);

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** PHONE_KEYS, or the development key where that is allowed; a bad key stops the start, named. */
function phoneKeys(text: string, nodeEnv: string): Omit<Config['phone'], 'memoSize'> {
  if (text.trim() === '') {
    if (nodeEnv === 'production') return { keys: [], development: false };
    return { keys: parsePhoneKeys(DEVELOPMENT_KEY_TEXT), development: true };
  }
  let keys: PhoneKey[];
  try {
    keys = parsePhoneKeys(text);
  } catch (err) {
    throw new ConfigError(`invalid configuration: PHONE_KEYS: ${(err as Error).message}`);
  }
  if (nodeEnv === 'production') {
    const dev = keys.findIndex(isDevelopmentKey);
    if (dev >= 0) {
      throw new ConfigError(`invalid configuration: PHONE_KEYS: key ${dev + 1} is the published development key`);
    }
  }
  return { keys, development: false };
}

/** The phone keys, or a ConfigError naming PHONE_KEYS when production has none. */
export function requirePhoneKeys(config: Pick<Config, 'phone'>): PhoneKey[] {
  if (config.phone.keys.length === 0) {
    throw new ConfigError(
      'invalid configuration: PHONE_KEYS: required when NODE_ENV=production (docs/phone-encryption.md)',
    );
  }
  return config.phone.keys;
}

/** Merges config/default.json, config/<NODE_ENV>.json and the environment, then validates. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const nodeEnv = env.NODE_ENV || 'development';
  const merged: Record<string, unknown> = { ...defaults, ...(byEnv[nodeEnv] ?? {}) };
  for (const key of Object.keys(defaults)) {
    const value = env[key];
    if (value !== undefined && value !== '') merged[key] = value;
  }
  // Empty strings are meaningful for secrets an operator deliberately blanks out.
  for (const key of [
    'WECHAT_APPID',
    'WECHAT_SECRET',
    'REDIS_KEY_PREFIX',
    'REDIS_CLUSTER_NODES',
    'REDIS_SENTINELS',
    'TRUSTED_OPENID_HEADER',
    'TRUSTED_UNIONID_HEADER',
    'WECHAT_PUSH_TOKEN',
    'WECHAT_PUSH_AES_KEY',
    'WECHAT_PUSH_AES_KEY_PREVIOUS',
    'PHONE_KEYS',
  ]) {
    if (env[key] === '') merged[key] = '';
  }
  const { error, value } = schema.validate(merged, { abortEarly: true, convert: true });
  if (error) {
    const variable = String(error.details[0]?.path[0] ?? 'configuration');
    throw new ConfigError(`invalid configuration: ${variable}: ${error.details[0]?.message ?? error.message}`);
  }
  const v = value as Record<string, never>;
  if (String(v.REDIS_CLUSTER_NODES).trim() && String(v.REDIS_SENTINELS).trim()) {
    throw new ConfigError(
      'invalid configuration: REDIS_SENTINELS: set REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both',
    );
  }
  return {
    env: nodeEnv,
    port: v.PORT,
    host: v.HOST,
    db: {
      url: v.DATABASE_URL,
      poolMax: v.DB_POOL_MAX,
      acquireTimeoutMs: v.DB_ACQUIRE_TIMEOUT_MS,
      queryTimeoutMs: v.DB_QUERY_TIMEOUT_MS,
    },
    redis: {
      url: v.REDIS_URL,
      keyPrefix: v.REDIS_KEY_PREFIX,
      commandTimeoutMs: v.REDIS_COMMAND_TIMEOUT_MS,
      breakerCooldownMs: v.REDIS_BREAKER_COOLDOWN_MS,
      clusterNodes: String(v.REDIS_CLUSTER_NODES)
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
      sentinels: String(v.REDIS_SENTINELS)
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
      sentinelName: v.REDIS_SENTINEL_NAME,
    },
    wechat: {
      appid: v.WECHAT_APPID,
      secret: v.WECHAT_SECRET,
      apiBase: String(v.WECHAT_API_BASE).replace(/\/+$/, ''),
      timeoutMs: v.WECHAT_TIMEOUT_MS,
      sessionKeyTtlSeconds: v.WECHAT_SESSION_KEY_TTL_SECONDS,
      tokenRefusalBackoffMs: v.WECHAT_TOKEN_REFUSAL_BACKOFF_MS,
    },
    push: {
      token: v.WECHAT_PUSH_TOKEN,
      aesKeys: [v.WECHAT_PUSH_AES_KEY, v.WECHAT_PUSH_AES_KEY_PREVIOUS].filter(Boolean),
    },
    cache: { ttlSeconds: v.CACHE_TTL_SECONDS, absentTtlMs: v.CACHE_ABSENT_TTL_MS },
    timeZone: v.TIME_ZONE,
    logLevel: v.LOG_LEVEL,
    bodyLimit: v.BODY_LIMIT,
    authMode: v.AUTH_MODE,
    identity: { trustedOpenidHeader: v.TRUSTED_OPENID_HEADER, trustedUnionidHeader: v.TRUSTED_UNIONID_HEADER },
    sessions: {
      ttlSeconds: v.SESSION_TTL_SECONDS,
      idleSeconds: v.SESSION_IDLE_SECONDS,
      maxPerUser: v.SESSION_MAX_PER_USER,
    },
    rateLimit: {
      windowSeconds: v.RATE_LIMIT_WINDOW_SECONDS,
      ipPoints: v.RATE_LIMIT_IP,
      openidPoints: v.RATE_LIMIT_OPENID,
      localKeys: v.RATE_LIMIT_LOCAL_KEYS,
    },
    trustProxy: Number(v.TRUST_PROXY),
    logFormat: v.LOG_FORMAT,
    shutdownGraceMs: v.SHUTDOWN_GRACE_MS,
    shutdownDelayMs: v.SHUTDOWN_DELAY_MS,
    shutdownRepeatMs: v.SHUTDOWN_REPEAT_MS,
    readyTimeoutMs: v.READY_TIMEOUT_MS,
    workers: v.WORKERS === 'auto' ? availableParallelism() : Number(v.WORKERS),
    http: {
      maxInflight: v.MAX_INFLIGHT,
      maxConnections: v.MAX_CONNECTIONS,
      headersTimeoutMs: v.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: v.HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: v.HTTP_KEEP_ALIVE_TIMEOUT_MS,
      maxHeaderSize: v.HTTP_MAX_HEADER_SIZE,
    },
    ops: { port: v.OPS_PORT, host: v.OPS_HOST || v.HOST },
    media: {
      dir: v.MEDIA_DIR,
      publicBaseUrl: String(v.PUBLIC_BASE_URL).replace(/\/+$/, ''),
      avatarMaxBytes: v.AVATAR_MAX_BYTES,
      uploadsMax: v.AVATAR_UPLOADS_MAX,
      uploadsPerUser: v.AVATAR_UPLOADS_PER_USER,
      uploadsPerUserPerMinute: v.AVATAR_UPLOADS_PER_USER_PER_MINUTE,
      uploadMinBytesPerSecond: v.AVATAR_UPLOAD_MIN_BYTES_PER_S,
      decodeMaxBytes: v.AVATAR_DECODE_MAX_BYTES,
      sweepIntervalMs: v.MEDIA_SWEEP_INTERVAL_MS,
      sweepBatch: v.MEDIA_SWEEP_BATCH,
    },
    content: {
      // auto: on wherever WeChat can be asked, i.e. an app is configured.
      enabled: v.CONTENT_CHECK === 'on' || (v.CONTENT_CHECK === 'auto' && v.WECHAT_APPID !== ''),
      review: v.CONTENT_REVIEW,
      failure: v.CONTENT_CHECK_FAILURE,
      cacheTtlSeconds: v.CONTENT_CACHE_TTL_SECONDS,
    },
    phone: { ...phoneKeys(String(v.PHONE_KEYS), nodeEnv), memoSize: v.PHONE_MEMO_SIZE },
  };
}
