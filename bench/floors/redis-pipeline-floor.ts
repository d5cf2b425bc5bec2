/**
 * A second floor of cached loginByOpenid, to check the first (redis-floor.ts, the service's own
 * login script): node:http + ioredis with no script, ONE pipelined round trip that reads the
 * cached profile (HMGET) and writes a session (SET … PX, and its index: ZADD,
 * ZREMRANGEBYSCORE, PEXPIRE). Being one trip, the session cannot carry the user_id read in
 * it: its JSON holds the openid only, a few bytes shorter than the service's.
 */
import Redis from 'ioredis';
import { loadConfig } from '../../src/config';
import { keyLayout } from '../../src/redis/keys';
import { draftSession } from '../../src/sessions/store';
import { NOT_FOUND, openidServer, PREFIX, redisStore, runFloor } from './openid-server';

const config = loadConfig();
const keys = keyLayout(config.redis.keyPrefix);
const redis = new Redis(config.redis.url, { enableAutoPipelining: true, maxRetriesPerRequest: 0 });

const FAILED = '{"code":-2,"msg":"redis error","data":null}';

const server = openidServer((openid, send) => {
  const d = draftSession(keys, config.sessions, openid);
  const [token, keyTtlMs, expiresAtMs, nowMs, indexTtlMs] = d.args;
  redis
    .pipeline()
    .hmget(keys.profile(openid), 'id', 'user')
    .set(d.key, `${d.head}0${d.tail}`, 'PX', keyTtlMs)
    .zadd(d.index, expiresAtMs, token)
    .zremrangebyscore(d.index, 0, nowMs)
    .pexpire(d.index, indexTtlMs)
    .exec()
    .then(
      (results) => {
        const found = results?.[0]?.[1] as (string | null)[] | undefined;
        const user = found?.[1];
        if (!user) return send(NOT_FOUND);
        send(`${PREFIX}${user.slice(0, -1)},"token":"${d.token}","token_expires_at":${d.expires_at}}}`);
      },
      () => send(FAILED),
    );
});

runFloor(server, config, redisStore(redis));
