import { createServer, type Server } from 'node:http';

export const PREFIX = '{"code":0,"msg":"success","data":';
export const NOT_FOUND = '{"code":-2,"msg":"no such user","data":null}';
const BAD = '{"code":-1,"msg":"openid is required","data":null}';

type Send = (body: string) => void;

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
