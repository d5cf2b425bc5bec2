/**
 * The Redis floor of the cached loginByOpenid path: a bare node:http server that does only
 * what that path cannot avoid. It reads and JSON.parses the same body, then makes the same ONE
 * Redis round trip as the service: the login script of src/users/cache.ts, which reads the
 * cached profile and stores the session (SET, and the index: ZADD, ZREMRANGEBYSCORE, PEXPIRE)
 * with the cached user_id. The session is drafted by the service's own draftSession (same
 * token generator, same JSON). The answer is the service's envelope, built by string
 * concatenation. No framework, no validation, no breaker, no logging. It keeps ioredis's
 * auto-pipelining, which the service turned off (src/redis/client.ts): for a server this bare,
 * on or off measured the same (9,435 and 9,061 req/s, 80.9 us of CPU per request either way).
 */
import Redis from 'ioredis';
import { loadConfig } from '../../src/config';
import { keyLayout } from '../../src/redis/keys';
import { draftSession } from '../../src/sessions/store';
import { LOGIN_LUA, type LoginCommand } from '../../src/users/cache';
import { NOT_FOUND, openidServer, PREFIX, redisStore, runFloor } from './openid-server';

const config = loadConfig();
const keys = keyLayout(config.redis.keyPrefix);
const redis = new Redis(config.redis.url, { enableAutoPipelining: true, maxRetriesPerRequest: 0 });
redis.defineCommand('login', { numberOfKeys: 3, lua: LOGIN_LUA });
const scripted = redis as Redis & { login: LoginCommand };

const FAILED = '{"code":-2,"msg":"redis error","data":null}';

const server = openidServer((openid, send) => {
  const d = draftSession(keys, config.sessions, openid);
  scripted.login(keys.profile(openid), d.key, d.index, d.head, d.tail, ...d.args).then(
    (user) => {
      if (!user) return send(NOT_FOUND);
      send(`${PREFIX}${user.slice(0, -1)},"token":"${d.token}","token_expires_at":${d.expires_at}}}`);
    },
    () => send(FAILED),
  );
});

runFloor(server, config, redisStore(redis));
