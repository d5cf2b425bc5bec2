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
