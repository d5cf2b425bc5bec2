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
import { loadConfig } from '../../src/config';
import { cachedLogin, openidServer, redisStore, runFloor } from './openid-server';

const config = loadConfig();
const { redis, login } = cachedLogin(config);

runFloor(openidServer(login), config, redisStore(redis));
