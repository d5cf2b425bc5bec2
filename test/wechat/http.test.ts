import { expect } from 'chai';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ServiceError } from '../../src/errors';
import { fetchText, MAX_ANSWER_BYTES, postJson } from '../../src/wechat/http';
import { freePort } from '../helpers/redis-server';

const SECRET = 'secret-in-the-url-0123456789';

/** The WeChat calls' one HTTP client (Node's fetch) against a local server that answers as each test says. */
describe('WeChat HTTP client (src/wechat/http.ts)', function () {
  this.timeout(10_000);
  let server: Server;
  let base: string;
  let answer: (req: IncomingMessage, res: ServerResponse) => void;
  const sockets = new Set<Socket>();
  let closed = 0;

  before(async () => {
    server = createServer((req, res) => answer(req, res));
    server.on('connection', (socket) => {
      sockets.add(socket);
      socket.on('close', () => (sockets.delete(socket), closed++));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  const url = () => new URL(`${base}/sns/jscode2session?secret=${SECRET}`);
  async function failure(call: Promise<unknown>): Promise<ServiceError> {
    const err = await call.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(ServiceError);
    // Neither the URL (it may carry the secret or the access token) nor the answer is told.
    expect((err as Error).message).to.not.include(SECRET);
    expect((err as Error).message).to.not.include('/sns/');
    return err as ServiceError;
  }

  it('answers a GET, and POSTs JSON with its type and length', async () => {
    const seen: { method?: string; type?: string; length?: string; body: string }[] = [];
    answer = (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c));
      req.on('end', () => {
        seen.push({
          method: req.method,
          type: req.headers['content-type'],
          length: req.headers['content-length'],
          body,
        });
        res.end('{"errcode":0,"openid":"o-1"}');
      });
    };
    expect(await fetchText(url(), {}, 2000)).to.equal('{"errcode":0,"openid":"o-1"}');
    expect(await postJson(url(), { code: '码' }, 2000)).to.deep.equal({ errcode: 0, openid: 'o-1' });
    expect(seen).to.deep.equal([
      { method: 'GET', type: undefined, length: undefined, body: '' },
      {
        method: 'POST',
        type: 'application/json',
        length: String(Buffer.byteLength('{"code":"码"}')),
        body: '{"code":"码"}',
      },
    ]);
  });

  it(`reads no more than ${MAX_ANSWER_BYTES} bytes of an answer, told or streamed, and drops its connection`, async () => {
    let written = 0;
    answer = (_req, res) => {
      // Streamed without a length, far past the cap: the client must stop reading.
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(4096, 'x');
      const more = () => {
        while (written < 64 * 1024 * 1024 && res.write(chunk)) written += chunk.length;
        if (written < 64 * 1024 * 1024 && !res.destroyed) res.once('drain', more);
      };
      res.on('close', () => res.removeAllListeners('drain'));
      more();
    };
    const before = closed;
    const err = await failure(fetchText(url(), {}, 5000));
    expect(err.message).to.match(/larger than 16384 bytes/);
    await new Promise((r) => setTimeout(r, 100));
    expect(closed).to.be.above(before);
    expect(written).to.be.below(8 * 1024 * 1024);

    let bodyWritten = false;
    answer = (_req, res) => {
      res.writeHead(200, { 'content-length': String(MAX_ANSWER_BYTES + 1) });
      res.flushHeaders();
      setTimeout(() => ((bodyWritten = true), res.end(Buffer.alloc(MAX_ANSWER_BYTES + 1))), 300);
    };
    const told = await failure(fetchText(url(), {}, 5000, () => new ServiceError('upstream', 'too large, told')));
    expect(told.message).to.equal('too large, told');
    // Refused on its header, before a byte of the body came.
    expect(bodyWritten).to.equal(false);
  });

  it('reads the answer of a refusal, then fails with its status', async () => {
    answer = (_req, res) => res.writeHead(502).end('<html>bad gateway</html>');
    expect((await failure(fetchText(url(), {}, 2000))).message).to.equal('wechat: HTTP 502 from WeChat');
  });

  it('gives up after its timeout, also on an answer that stalls half way', async () => {
    answer = () => undefined; // never answers
    let started = performance.now();
    expect((await failure(fetchText(url(), {}, 300))).message).to.equal('wechat: no answer within 300 ms');
    expect(performance.now() - started).to.be.within(250, 2000);

    answer = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"errcode":0,');
    };
    started = performance.now();
    expect((await failure(fetchText(url(), {}, 300))).message).to.equal('wechat: no answer within 300 ms');
    expect(performance.now() - started).to.be.within(250, 2000);
  });

  it('fails as unreachable when the connection is refused or cut mid-answer', async () => {
    const port = await freePort();
    const refused = await failure(fetchText(new URL(`http://127.0.0.1:${port}/x?secret=${SECRET}`), {}, 2000));
    expect(refused.message).to.equal('wechat: unreachable (ECONNREFUSED)');

    answer = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"errcode":0,', () => res.socket?.destroy());
    };
    expect((await failure(fetchText(url(), {}, 2000))).message).to.match(/^wechat: unreachable/);
  });
});
