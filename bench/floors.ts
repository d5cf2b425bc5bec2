/**
 * The floors: bare servers that do only the I/O a path cannot avoid, each a process of its own
 * (`node --import tsx bench/floors.ts <name>`, configured like the service). Each reads and
 * JSON.parses the body and answers in the service's envelope by string concatenation: no
 * framework, validation, guards, limits, metrics or logging. They answer any path (the Koa floor:
 * its route and /), so the bench knows one is ready when it answers at all: it listens once its
 * store answers.
 *
 * - redis: the cached login as the service does it, its own login script (src/users/cache.ts:
 *   read the cached profile, store the session drafted by its draftSession and the index entry)
 *   in ONE Redis round trip. It keeps ioredis's auto-pipelining, which the service turned off:
 *   for a server this bare, on or off measured the same (9,435 and 9,061 req/s, 80.9 µs of CPU
 *   a request either way).
 * - pipeline: to check the first, the same work as one plain pipeline (HMGET, SET … PX, ZADD,
 *   ZREMRANGEBYSCORE, PEXPIRE); being one trip, the session holds the openid but not the user_id.
 * - koa: the redis floor's work in a Koa app with @koa/router and one route: the framework's
 *   ceiling on the stack the product fixed. The gap between it and the redis floor is Koa's; the
 *   gap between the service and it is the service's own.
 * - mysql: the uncached login's indexed SELECT (src/users/repository.ts findByOpenid) on a mysql2
 *   pool of the service's size, no knex, no Redis.
 * - update: update's transaction on one pooled connection: BEGIN, SELECT … FOR UPDATE, UPDATE with
 *   version + 1, COMMIT. It leaves out the tombstone the service writes to Redis inside it.
 */
import Router from '@koa/router';
import Redis from 'ioredis';
import Koa from 'koa';
import mysql from 'mysql2';
import { createServer, type IncomingMessage } from 'node:http';
import { loadConfig } from '../src/config';
import { parseDatabaseUrl } from '../src/db/connection';
import { keyLayout } from '../src/redis/keys';
import { draftSession } from '../src/sessions/store';
import { LOGIN_LUA, type LoginCommand } from '../src/users/cache';

type Send = (body: string) => void;
type Body = Record<string, unknown> | undefined;
type Answer = (body: Body, send: Send) => void;
const OK = '{"code":0,"msg":"success","data":';
const NOT_FOUND = '{"code":-2,"msg":"no such user","data":null}';
const BAD = '{"code":-1,"msg":"bad request","data":null}';
const FAILED = '{"code":-2,"msg":"store error","data":null}';

const config = loadConfig();
const keys = keyLayout(config.redis.keyPrefix);

function readJson(req: IncomingMessage, then: (body: Body) => void): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    let body: Body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString()) as Body;
    } catch {
      // not JSON: answered as bad input
    }
    then(body);
  });
}
/** The body's openid, or -1 without one. */
const byOpenid =
  (answer: (openid: string, send: Send) => void): Answer =>
  (body, send) =>
    typeof body?.openid === 'string' && body.openid ? answer(body.openid, send) : send(BAD);
const withSession = (user: string, d: { token: string; expires_at: number }) =>
  `${OK}${user.slice(0, -1)},"token":"${d.token}","token_expires_at":${d.expires_at}}}`;

function redisLogin(redis: Redis) {
  redis.defineCommand('login', { numberOfKeys: 3, lua: LOGIN_LUA });
  return byOpenid((openid, send) => {
    const d = draftSession(keys, config.sessions, openid);
    (redis as Redis & { login: LoginCommand })
      .login(keys.profile(openid), d.key, d.index, d.head, d.tail, ...d.args)
      .then(
        (user) => send(user ? withSession(user, d) : NOT_FOUND),
        () => send(FAILED),
      );
  });
}

function pipelineLogin(redis: Redis) {
  return byOpenid((openid, send) => {
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
          const user = (results?.[0]?.[1] as (string | null)[] | undefined)?.[1];
          send(user ? withSession(user, d) : NOT_FOUND);
        },
        () => send(FAILED),
      );
  });
}

const SELECT =
  'SELECT id, openid, nick_name, avatar, gender, phone, version, ctime, mtime FROM users WHERE openid = ? LIMIT 2';
const mysqlLogin = (pool: mysql.Pool) =>
  byOpenid((openid, send) =>
    pool.query(SELECT, [openid], (err, rows) => {
      const list = rows as mysql.RowDataPacket[];
      send(err ? FAILED : list.length === 1 ? `${OK}${JSON.stringify(list[0])}}` : NOT_FOUND);
    }),
  );

const LOCK = 'SELECT openid, version FROM users WHERE id = ? FOR UPDATE';
const WRITE =
  'UPDATE users SET nick_name = ?, version = version + 1, ' +
  'mtime = GREATEST(CURRENT_TIMESTAMP, mtime + INTERVAL 1 SECOND) WHERE id = ?';
const update =
  (pool: mysql.Pool): Answer =>
  (body, send) => {
    const id = body?.user_id;
    const nick = (body?.update as { nick_name?: unknown } | undefined)?.nick_name;
    if (typeof id !== 'number' || typeof nick !== 'string') return send(BAD);
    pool.getConnection((err, conn) => {
      if (err) return send(FAILED);
      const end = (answer: string) => conn.rollback(() => (conn.release(), send(answer)));
      conn.beginTransaction((e1) => {
        if (e1) return (conn.release(), send(FAILED));
        conn.query(LOCK, [id], (e2, rows) => {
          if (e2 || (rows as mysql.RowDataPacket[]).length !== 1) return end(e2 ? FAILED : NOT_FOUND);
          conn.query(WRITE, [nick, id], (e3) => {
            if (e3) return end(FAILED);
            conn.commit((e4) => (e4 ? end(FAILED) : (conn.release(), send(`${OK}null}`))));
          });
        });
      });
    });
  };

const floor = process.argv[2];
const db = { ...parseDatabaseUrl(config.db.url), connectionLimit: config.db.poolMax };
let answer: Answer;
let store: { ready(listen: () => void): void; close(done: () => void): void };
if (floor === 'redis' || floor === 'pipeline' || floor === 'koa') {
  const client = new Redis(config.redis.url, { enableAutoPipelining: true, maxRetriesPerRequest: 0 });
  answer = floor === 'pipeline' ? pipelineLogin(client) : redisLogin(client);
  store = { ready: (listen) => client.once('ready', listen), close: (done) => (client.disconnect(), done()) };
} else if (floor === 'mysql' || floor === 'update') {
  const p = mysql.createPool({ ...db, charset: 'utf8mb4', timezone: 'Z', supportBigNumbers: true });
  answer = floor === 'mysql' ? mysqlLogin(p) : update(p);
  store = {
    // One query first: the pool has a connection and the table exists.
    ready: (listen) =>
      p.query('SELECT 1 FROM users LIMIT 1', (err) => (err ? (console.error(err), process.exit(1)) : listen())),
    close: (done) => p.end(done),
  };
} else {
  throw new Error(`no floor named ${floor}: redis, pipeline, koa, mysql or update`);
}

const JSON_TYPE = 'application/json; charset=utf-8';
let server = createServer((req, res) =>
  readJson(req, (body) =>
    answer(body, (text) =>
      res.writeHead(200, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(text) }).end(text),
    ),
  ),
);
if (floor === 'koa') {
  const router = new Router();
  router.post('/service/user/loginByOpenid', async (ctx) => {
    const body = await new Promise<Body>((done) => readJson(ctx.req, done));
    ctx.type = JSON_TYPE;
    ctx.body = await new Promise<string>((done) => answer(body, done));
  });
  router.get('/', (ctx) => void (ctx.body = 'ready'));
  server = createServer(new Koa().use(router.routes()).callback());
}
store.ready(() => server.listen(config.port, config.host));
process.on('SIGTERM', () => {
  server.close();
  server.closeIdleConnections();
  store.close(() => process.exit(0));
});
