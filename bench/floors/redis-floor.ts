/**
 * The Redis floor of the cached loginByOpenid path: a bare node:http server that does only
 * what that path cannot avoid. It reads and JSON.parses the same body, then makes ONE Redis
 * round trip (the three commands are issued in one tick, so ioredis's auto-pipelining sends
 * them together): HMGET of the cached profile (id, user) and the session writes of
 * src/sessions/store.ts issue() (SET the session key with PX, and the index script on the
 * user's index). The token comes from the same generator. The answer is the service's
 * envelope, built by string concatenation. No framework, no validation, no breaker, no logging.
 *
 * The service needs the user_id before it can write the session JSON, so it makes two round
 * trips; a floor only bounds it from below, so this one writes `"user_id":null` instead.
 */
import Redis from 'ioredis';
import { loadConfig } from '../../src/config';
import { keyLayout } from '../../src/redis/keys';
import { SESSION_INDEX_LUA } from '../../src/sessions/store';
import { newToken } from '../../src/sessions/token';
import { NOT_FOUND, openidServer, PREFIX } from './openid-server';

const config = loadConfig();
const keys = keyLayout(config.redis.keyPrefix);
const { ttlSeconds, idleSeconds } = config.sessions;
const keyTtlMs = Math.min(ttlSeconds, idleSeconds) * 1000;
const redis = new Redis(config.redis.url, { enableAutoPipelining: true, maxRetriesPerRequest: 0 });
redis.defineCommand('sessionIndex', { numberOfKeys: 1, lua: SESSION_INDEX_LUA });
const indexer = redis as Redis & {
  sessionIndex(key: string, token: string, expiresAtMs: number, nowMs: number, ttlMs: number): Promise<number>;
};

const FAILED = '{"code":-2,"msg":"redis error","data":null}';

const server = openidServer((openid, send) => {
  const token = newToken();
  const nowMs = Date.now();
  const issuedAt = Math.floor(nowMs / 1000);
  const expiresAt = issuedAt + ttlSeconds;
  const session = `{"v":1,"user_id":null,"openid":${JSON.stringify(openid)},"issued_at":${issuedAt},"expires_at":${expiresAt},"idle_timeout":${idleSeconds}}`;
  const index = keys.userSessions(openid);
  Promise.all([
    redis.hmget(keys.profile(openid), 'id', 'user'),
    redis.set(keys.session(token), session, 'PX', keyTtlMs),
    indexer.sessionIndex(index, token, expiresAt * 1000, nowMs, ttlSeconds * 1000),
  ]).then(
    ([[id, user]]) => {
      if (id === null || !user) return send(NOT_FOUND);
      send(`${PREFIX}${user.slice(0, -1)},"token":"${token}","token_expires_at":${expiresAt}}}`);
    },
    () => send(FAILED),
  );
});

redis.once('ready', () => server.listen(config.port, config.host));
process.on('SIGTERM', () => {
  server.close();
  server.closeIdleConnections();
  redis.disconnect();
  process.exit(0);
});
