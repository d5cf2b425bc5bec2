import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { deflateSync, gzipSync } from 'node:zlib';
import { checkAnswer } from './contract';

const flat = (headers: Record<string, string | string[] | undefined>) =>
  Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v]));

/** `{"openid":"<openid>","x":[{},{},…]}` of exactly `size` bytes: as many objects as fit. */
export function keysBody(openid: string, size: number): Buffer {
  const head = `{"openid":"${openid}","x":[`;
  const room = size - head.length - 2; // `]}`
  if (room < 2) throw new Error(`no room for keys in ${size} bytes`);
  const objects = Math.floor((room + 1) / 3); // `{},` each, the last without its comma
  const pad = room - (objects * 3 - 1); // 0 or 1: a space keeps the size exact
  const body = `${head}${Array(objects).fill('{}').join(',')}${' '.repeat(pad)}]}`;
  if (Buffer.byteLength(body) !== size) throw new Error('keysBody: size mismatch');
  return Buffer.from(body);
}

/** About 1 KB of gzip (or deflate) that inflates to just under 1 MB of keysBody. */
export function bomb(encoding: 'gzip' | 'deflate', openid = 'x'): Buffer {
  const inflated = keysBody(openid, 1_000_000);
  return encoding === 'gzip' ? gzipSync(inflated, { level: 9 }) : deflateSync(inflated, { level: 9 });
}

export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** POSTs raw bytes with exactly the given headers (no client-side encoding of any kind). */
export function rawPost(
  url: string,
  path: string,
  payload: Buffer,
  headers: Record<string, string | number>,
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method: 'POST', headers: { ...headers, 'content-length': payload.length } });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: the test says what it expected
        }
        try {
          checkAnswer(`${url}${path}`, {
            method: 'POST',
            status: res.statusCode ?? 0,
            headers: flat(res.headers),
            body: text,
          });
        } catch (err) {
          return reject(err);
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    // The server may answer 413 and close before the whole body is written.
    req.on('error', reject);
    req.end(payload);
  });
}

export type Stall = 'silent' | 'half headers' | 'half body';

/**
 * A connection that stops half-way: connects and sends nothing, sends part of the headers, or
 * sends headers announcing a body and half of it. `closed` resolves when the server ends it.
 */
export function stalledConnection(url: string, kind: Stall): Promise<{ socket: Socket; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('data', () => {}); // read the 408 so that the close is seen
    socket.on('error', () => {});
    socket.once('connect', () => {
      if (kind === 'half headers') socket.write('POST /service/user/get HTTP/1.1\r\nHost: x\r\nContent-Type: appl');
      if (kind === 'half body') {
        socket.write(
          'POST /service/user/get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"openid":"',
        );
      }
      resolve({ socket, closed });
    });
    socket.once('error', reject);
  });
}
