import Redis from 'ioredis';
import mysql from 'mysql2';
import { createServer, type Server } from 'node:http';
import type { Config } from '../../src/config';
import { parseDatabaseUrl } from '../../src/db/connection';
import { keyLayout } from '../../src/redis/keys';
import { draftSession } from '../../src/sessions/store';
import { LOGIN_LUA, type LoginCommand } from '../../src/users/cache';

export const PREFIX = '{"code":0,"msg":"success","data":';
export const NOT_FOUND = '{"code":-2,"msg":"no such user","data":null}';
export const BAD = '{"code":-1,"msg":"openid is required","data":null}';
const REDIS_FAILED = '{"code":-2,"msg":"redis error","data":null}';

type Send = (body: string) => void;

/** A mysql2 pool of the service's size (DB_POOL_MAX) and connection settings. */
export function floorPool(config: Config): mysql.Pool {
  return mysql.createPool({
    ...parseDatabaseUrl(config.db.url),
    connectionLimit: config.db.poolMax,
    charset: 'utf8mb4',
    timezone: 'Z',
    supportBigNumbers: true,
  });
}

/**
 * The cached login as the Redis floors do it: the service's own login script (read the cached
 * profile, store the session and its index entry) in one round trip, on an ioredis client with
 * auto-pipelining, the session drafted by the service's draftSession. `login` sends the
 * service's envelope: the user and the new session, no such user, or a Redis error.
 */
export function cachedLogin(config: Config): { redis: Redis; login(openid: string, send: Send): void } {
  const keys = keyLayout(config.redis.keyPrefix);
  const redis = new Redis(config.redis.url, { enableAutoPipelining: true, maxRetriesPerRequest: 0 });
  redis.defineCommand('login', { numberOfKeys: 3, lua: LOGIN_LUA });
  const scripted = redis as Redis & { login: LoginCommand };
  return {
    redis,
    login(openid, send) {
      const d = draftSession(keys, config.sessions, openid);
      scripted.login(keys.profile(openid), d.key, d.index, d.head, d.tail, ...d.args).then(
        (user) => {
          if (!user) return send(NOT_FOUND);
          send(`${PREFIX}${user.slice(0, -1)},"token":"${d.token}","token_expires_at":${d.expires_at}}}`);
        },
        () => send(REDIS_FAILED),
      );
    },
  };
}

/**
 * What every floor shares: a bare node:http server that reads and JSON.parses the body
 * (undefined when it is not JSON) and lets `answer` do the I/O a path cannot avoid.
 */
export function bodyServer(answer: (body: unknown, send: Send) => void): Server {
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const send = (body: string) => {
        res.writeHead(200, {
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(body),
        });
        res.end(body);
      };
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString());
      } catch {
        body = undefined;
      }
      answer(body, send);
    });
  });
}

/** A floor of an openid route: the body's openid (answering -1 without one). */
export function openidServer(answer: (openid: string, send: Send) => void): Server {
  return bodyServer((body, send) => {
    const openid = (body as { openid?: unknown } | undefined)?.openid;
    if (typeof openid !== 'string' || !openid) return send(BAD);
    answer(openid, send);
  });
}

/**
 * Every floor's life: listen once `ready` calls back (its store answers), and on SIGTERM stop
 * accepting, drop idle connections and `close` the store before exiting.
 */
export function runFloor(
  server: Server,
  at: { port: number; host: string },
  store: { ready(listen: () => void): void; close(done: () => void): void },
): void {
  store.ready(() => server.listen(at.port, at.host));
  process.on('SIGTERM', () => {
    server.close();
    server.closeIdleConnections();
    store.close(() => process.exit(0));
  });
}

/** A mysql2 pool as a floor's store: one query first, so it has a connection (and the table exists). */
export function mysqlStore(
  pool: { query(sql: string, cb: (err: Error | null) => void): unknown; end(cb: () => void): void },
  name: string,
): { ready(listen: () => void): void; close(done: () => void): void } {
  return {
    ready: (listen) =>
      pool.query('SELECT 1 FROM users LIMIT 1', (err) => {
        if (!err) return listen();
        process.stderr.write(`${name}: ${err.message}\n`);
        process.exit(1);
      }),
    close: (done) => pool.end(done),
  };
}

/** An ioredis client as a floor's store. */
export function redisStore(redis: { once(event: 'ready', cb: () => void): unknown; disconnect(): void }): {
  ready(listen: () => void): void;
  close(done: () => void): void;
} {
  return {
    ready: (listen) => redis.once('ready', listen),
    close: (done) => {
      redis.disconnect();
      done();
    },
  };
}
