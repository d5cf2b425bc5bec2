import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config';
import { PhoneCipher } from '../../src/users/phone-cipher';

/** One id per test run: its own database and Redis key prefix, removed at the end. */
export const RUN_ID = `${process.pid}_${randomBytes(3).toString('hex')}`;

const MYSQL_BASE = process.env.TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306';
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0';

/** sha256('wechat-user-service test key'), as PHONE_KEYS. */
export const TEST_PHONE_KEYS = 'test:5F165Vh5O1FADBStCpyVbioyXq1W2jIAR98UGfJAsr4=';

export const TEST_ENV: Record<string, string> = {
  NODE_ENV: 'test',
  HOST: '127.0.0.1',
  PORT: '0',
  // Here too, not only in config/test.json: a test may run the service as NODE_ENV=production.
  OPS_PORT: '0',
  DATABASE_URL: `${MYSQL_BASE}/user_service_test_${RUN_ID}`,
  REDIS_URL,
  REDIS_KEY_PREFIX: `test:${RUN_ID}:`,
  LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  // Never the real WeChat: tests that need it start a fake one; port 9 (discard) refuses.
  WECHAT_API_BASE: 'http://127.0.0.1:9',
  // Set by test/redis/cluster.test.ts to run suites against a real Redis Cluster.
  REDIS_CLUSTER_NODES: process.env.TEST_REDIS_CLUSTER_NODES ?? '',
  // Uploaded avatars go to a folder of the run, removed at the end (test/setup.ts).
  MEDIA_DIR: join(tmpdir(), `user-service-test-media-${RUN_ID}`),
  // A key of the tests' own, so a test may run the service as NODE_ENV=production; the
  // development key's path (PHONE_KEYS unset) has its own tests.
  PHONE_KEYS: TEST_PHONE_KEYS,
};

/** The test configuration, with per-test overrides in the same names as the environment. */
export function testConfig(overrides: Record<string, string | number> = {}): Config {
  const env: Record<string, string> = { ...TEST_ENV };
  for (const [k, v] of Object.entries(overrides)) env[k] = String(v);
  return loadConfig(env);
}

let counter = 0;
/** A fresh openid for each test, so tests never see each other's users. */
export function newOpenid(tag = 'o'): string {
  counter += 1;
  return `${tag}_${RUN_ID}_${counter}_${randomBytes(3).toString('hex')}`;
}

/** The phone cipher of the test configuration (TEST_PHONE_KEYS unless PHONE_KEYS is given). */
export function testPhones(overrides: Record<string, string | number> = {}): PhoneCipher {
  return new PhoneCipher(testConfig(overrides).phone.keys);
}
