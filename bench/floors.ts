/**
 * The floors: bare servers that do only the I/O a path cannot avoid, each a process of its own
 * (`node --import tsx bench/floors.ts <name>`, configured like the service): read and JSON.parse
 * the body, answer in the envelope by concatenation; no framework, validation, guards, limits,
 * metrics or logs. Any path is answered, so the bench knows one is ready (it listens once its
 * store answers).
 * - redis: the cached login, the service's own login script (src/users/cache.ts: the cached
 *   profile read, the session and its index entry stored) in ONE Redis round trip. It keeps
 *   ioredis's auto-pipelining, which the service turned off (on or off: 9,435 vs 9,061 req/s).
 * - pipeline: to check it, the same work as one plain pipeline (the session lacks the user_id).
 * - koa: the redis floor in Koa with @koa/router and one route: the framework's ceiling.
 * - mysql: the uncached login's I/O: the login script finds no profile (one Redis trip), the
 *   SELECT of repository.ts on a mysql2 pool of the service's size, then the row cached with the
 *   session (cache.ts FILL_WITH_SESSION, one trip): what no cache can skip on a miss.
 * - update: BEGIN, SELECT … FOR UPDATE, UPDATE with version + 1, COMMIT on one pooled
 *   connection; without the tombstone the service writes to Redis inside it.
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
import { FILL_WITH_SESSION, LOGIN_LUA, type LoginCommand } from '../src/users/cache';

type Send = (body: string) => void;
type Body = Record<string, unknown> | undefined;
type Answer = (body: Body, send: Send) => void;
const OK = '{"code":0,"msg":"success","data":';
const NOT_FOUND = '{"code":-2,"msg":"no such user","data":null}';
const BAD = '{"code":-1,"msg":"bad request","data":null}';
const FAILED = '{"code":-2,"msg":"store error","data":null}';
const fail = (send: Send) => () => send(FAILED);

const config = loadConfig();
const keys = keyLayout(config.redis.keyPrefix);

function readJson(req: IncomingMessage, then: (body: Body) => void): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  // Not JSON: undefined, answered as bad input.
  req.on('end', () => then(tryParse(Buffer.concat(chunks).toString())));
}
const tryParse = (text: string): Body => {
  try {
    return JSON.parse(text) as Body;
  } catch {
    return undefined;
  }
};
/** The body's openid, or -1 without one. */
const byOpenid =
  (answer: (openid: string, send: Send) => void): Answer =>
  (body, send) =>
    typeof body?.openid === 'string' && body.openid ? answer(body.openid, send) : send(BAD);
const withSession = (user: string, d: { token: string; expires_at: number }) =>
  `${OK}${user.slice(0, -1)},"token":"${d.token}","token_expires_at":${d.expires_at}}}`;

/** What a floor does when the login script finds no profile: by default, "no such user". */
type Miss = (openid: string, d: ReturnType<typeof draftSession>, send: Send) => void;
function redisLogin(redis: Redis, miss: Miss = (_, __, send) => send(NOT_FOUND)) {
  redis.defineCommand('login', { numberOfKeys: 3, lua: LOGIN_LUA });
  return byOpenid((openid, send) => {
    const d = draftSession(keys, config.sessions, openid);
    (redis as Redis & { login: LoginCommand })
      .login(keys.profile(openid), d.key, d.index, d.head, d.tail, ...d.args)
      .then(
        (user) => void (user ? send(withSession(user, d)) : miss(openid, d, send)),
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
      .then((results) => {
        const user = (results?.[0]?.[1] as (string | null)[] | undefined)?.[1];
        send(user ? withSession(user, d) : NOT_FOUND);
      }, fail(send));
  });
}

const SELECT =
  'SELECT id, openid, nick_name, avatar, gender, phone, version, ctime, mtime FROM users WHERE openid = ? LIMIT 2';
type Fill = (...args: (string | number)[]) => Promise<number>;
function mysqlLogin(redis: Redis, pool: mysql.Pool) {
  redis.defineCommand('fill', { numberOfKeys: 3, lua: FILL_WITH_SESSION });
  const ttl = config.cache.ttlSeconds * 1000;
  return redisLogin(redis, (openid, d, send) =>
    pool.query(SELECT, [openid], (err, rows) => {
      const row = (rows as mysql.RowDataPacket[] | undefined)?.[0];
      if (err || !row) return send(err ? FAILED : NOT_FOUND);
      const user = JSON.stringify(row);
      const args = [keys.profile(openid), d.key, d.index, row.version, row.id, user, ttl, 'null', d.head, d.tail];
      (redis as Redis & { fill: Fill }).fill(...args, ...d.args).then(
        () => send(withSession(user, d)),
        () => send(FAILED),
      );
    }),
  );
}

const LOCK = 'SELECT openid, version FROM users WHERE id = ? FOR UPDATE';
const WRITE =
  'UPDATE users SET nick_name = ?, version = version + 1, ' +
  'mtime = GREATEST(CURRENT_TIMESTAMP, mtime + INTERVAL 1 SECOND) WHERE id = ?';
const update =
  (_: unknown, pool: mysql.Pool): Answer =>
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
const db = { ...parseDatabaseUrl(config.db.url), connectionLimit: config.db.poolMax, supportBigNumbers: true };
const REDIS_OPTIONS = { enableAutoPipelining: true, maxRetriesPerRequest: 0 };
const needs = (...of: string[]) => of.includes(floor!);
const client = needs('redis', 'pipeline', 'koa', 'mysql') ? new Redis(config.redis.url, REDIS_OPTIONS) : undefined;
const p = needs('mysql', 'update') ? mysql.createPool({ ...db, charset: 'utf8mb4', timezone: 'Z' }) : undefined;
if (!client && !p) throw new Error(`no floor named ${floor}: redis, pipeline, koa, mysql or update`);
const floors: Record<string, (r: Redis, p: mysql.Pool) => Answer> = {
  pipeline: pipelineLogin,
  mysql: mysqlLogin,
  update,
};
const answer = (floors[floor!] ?? redisLogin)(client!, p!);
// Redis ready, then one query: the pool has a connection and the table exists.
const ready = async () => {
  if (client) await new Promise((up) => client.once('ready', up));
  await p?.promise().query('SELECT 1 FROM users LIMIT 1');
};

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
ready().then(
  () => server.listen(config.port, config.host),
  (err) => (console.error(err), process.exit(1)),
);
process.on('SIGTERM', () => {
  server.close();
  server.closeIdleConnections();
  client?.disconnect();
  void Promise.resolve(p?.promise().end()).finally(() => process.exit(0));
});
