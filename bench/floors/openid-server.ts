import { createServer, type Server } from 'node:http';

export const PREFIX = '{"code":0,"msg":"success","data":';
export const NOT_FOUND = '{"code":-2,"msg":"no such user","data":null}';
const BAD = '{"code":-1,"msg":"openid is required","data":null}';

/**
 * What both floors share: a bare node:http server that reads and JSON.parses the body, takes
 * its openid (answering -1 without one) and lets `answer` do the I/O a path cannot avoid.
 */
export function openidServer(answer: (openid: string, send: (body: string) => void) => void): Server {
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
      let openid: unknown;
      try {
        openid = (JSON.parse(Buffer.concat(chunks).toString()) as { openid?: unknown }).openid;
      } catch {
        openid = undefined;
      }
      if (typeof openid !== 'string' || !openid) return send(BAD);
      answer(openid, send);
    });
  });
}
