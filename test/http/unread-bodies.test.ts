import { expect } from 'chai';
import { connect } from 'node:net';
import { LINGER } from '../../src/http/linger';
import { newOpenid } from '../helpers/env';
import { loginBody, post } from '../helpers/http';
import { scrape } from '../helpers/metrics';
import { spawnService, type SpawnedService } from '../helpers/spawned-service';
import { eventually } from '../helpers/wait';

const MiB = 1024 * 1024;

/**
 * A request that declares `declared` bytes of body and then sends them as fast as the server
 * takes them; resolves once the server closes the connection, with how much of the body the
 * server took (written into the socket, hence acknowledged or buffered) and what it answered.
 */
function flood(url: string, path: string, headers: string, declared: number) {
  const { port } = new URL(url);
  const start = performance.now();
  return new Promise<{ written: number; answer: string; ms: number }>((resolve) => {
    // Half-open allowed: it goes on sending after the server's FIN, as a hostile client would.
    const socket = connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let written = 0;
    let answer = '';
    socket.on('connect', () => {
      socket.write(`POST ${path} HTTP/1.1\r\nHost: t\r\n${headers}Content-Length: ${declared}\r\n\r\n`);
      const pump = () => {
        while (written < declared && !socket.destroyed) {
          written += chunk.length;
          if (!socket.write(chunk)) return void socket.once('drain', pump);
        }
      };
      pump();
    });
    socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve({ written, answer, ms: performance.now() - start }));
    // A service that reads on has failed by then; the test ends rather than send the whole GB.
    setTimeout(() => socket.destroy(), 15_000).unref();
  });
}

/** A JSON body cut off by the client half-way, on a connection of its own. */
function abortedBody(url: string): Promise<void> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), '127.0.0.1', () => {
      socket.write(
        'POST /service/user/get HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"openid":',
      );
      setTimeout(() => socket.destroy(), 5);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
  });
}

/** Node's fetch (undici), which keeps writing its body while the answer arrives. */
async function fetchStatus(url: string, init: RequestInit): Promise<string> {
  try {
    const res = await fetch(url, init);
    await res.arrayBuffer();
    return String(res.status);
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return cause?.code ?? (err as Error).message;
  }
}

describe('bodies the service does not read to their end (lingering close, the real process)', function () {
  this.timeout(60_000);
  let svc: SpawnedService;
  let token: string;

  before(async () => {
    // Its own process: in the test's own event loop the client's writes and the server's
    // reads take turns, which hides what a client on another host sees.
    svc = await spawnService({ LOG_LEVEL: 'info' });
    const login = await post(svc.url, 'login', loginBody(newOpenid()));
    token = login.body.data.token as string;
  });
  after(async () => {
    if (svc.proc.exitCode === null) svc.proc.kill('SIGKILL');
  });

  it('undici fetch sees the 413 of an avatar over 2 MiB (FormData) five times out of five', async () => {
    const statuses: string[] = [];
    for (let i = 0; i < 5; i++) {
      const form = new FormData();
      form.append('file', new Blob([Buffer.alloc(6 * MiB, 1)], { type: 'image/png' }), 'a.png');
      const headers = { authorization: `Bearer ${token}` };
      statuses.push(await fetchStatus(`${svc.url}/service/user/avatar`, { method: 'POST', body: form, headers }));
    }
    expect(statuses).to.deep.equal(['413', '413', '413', '413', '413']);
  });

  it('undici fetch sees the 413 of an oversized JSON body five times out of five', async () => {
    const statuses: string[] = [];
    const body = JSON.stringify({ openid: 'o', pad: 'a'.repeat(6 * MiB) });
    for (let i = 0; i < 5; i++) {
      const headers = { 'content-type': 'application/json' };
      statuses.push(await fetchStatus(`${svc.url}/service/user/get`, { method: 'POST', body, headers }));
    }
    expect(statuses).to.deep.equal(['413', '413', '413', '413', '413']);
  });

  const GB = 1_000_000_000;
  for (const [what, path, headers, code] of [
    [
      'an avatar without a token (-10)',
      '/service/user/avatar',
      'Content-Type: multipart/form-data; boundary=b\r\n',
      -10,
    ],
    ['multipart sent to get (-1)', '/service/user/get', 'Content-Type: multipart/form-data; boundary=b\r\n', -1],
  ] as const) {
    it(`cuts a declared 1 GB body early after answering ${what}`, async () => {
      const before = await scrape(svc.opsUrl);
      const { written, answer, ms } = await flood(svc.url, path, headers, GB);
      expect(answer).to.match(/^HTTP\/1\.1 200 /);
      expect(answer).to.match(/\r\nConnection: close\r\n/i);
      expect(answer).to.include(`"code":${code}`);
      // What the server read after the answer is bounded by LINGER.maxBytes; the rest of what
      // the client managed to write sat in the two kernels' socket buffers (a few MiB).
      expect(written, `${(written / MiB).toFixed(1)} MiB taken`).to.be.below(LINGER.maxBytes + 32 * MiB);
      expect(ms).to.be.below(LINGER.maxMs + 3000);
      const cut = (s: typeof before) => s.value('user_service_http_unread_bodies_total', { outcome: 'cut' });
      const after = await scrape(svc.opsUrl);
      expect(cut(after) - cut(before)).to.be.at.least(1);
    });
  }

  it(`lingers on at most ${LINGER.maxConnections} connections of the process at once; the others close at their answer`, async () => {
    const { port } = new URL(svc.url);
    // A body that keeps coming slowly after its answer: a lingering connection stays until
    // LINGER.maxMs, one closed at its answer ends at once.
    const trickle = () =>
      new Promise<{ answeredAt: number; closedAt: number }>((resolve) => {
        const socket = connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
        let answeredAt = NaN;
        socket.on('connect', () => {
          socket.write(
            'POST /service/user/get HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n' +
              `Content-Length: ${GB}\r\n\r\n`,
          );
          socket.write(Buffer.alloc(1024, 0x61));
        });
        const drip = setInterval(() => !socket.destroyed && socket.write(Buffer.alloc(1024, 0x61)), 100);
        socket.on('data', () => (answeredAt = Number.isNaN(answeredAt) ? performance.now() : answeredAt));
        socket.on('error', () => undefined);
        socket.on('close', () => {
          clearInterval(drip);
          resolve({ answeredAt, closedAt: performance.now() });
        });
      });
    const before = await scrape(svc.opsUrl);
    const all = await Promise.all(Array.from({ length: 3 * LINGER.maxConnections }, trickle));
    const lingered = all.filter((c) => c.closedAt - c.answeredAt > 1000).length;
    expect(all.every((c) => !Number.isNaN(c.answeredAt))).to.equal(true);
    expect(lingered).to.be.at.least(1).and.at.most(LINGER.maxConnections);
    expect(all.length - lingered, 'closed at their answer').to.be.at.least(2 * LINGER.maxConnections);
    const cut = (s: typeof before) => s.value('user_service_http_unread_bodies_total', { outcome: 'cut' });
    expect(cut(await scrape(svc.opsUrl)) - cut(before)).to.equal(lingered);
  });

  it('counts 1,000 aborted JSON bodies on /metrics and writes no warning or error line for them', async () => {
    const before = await scrape(svc.opsUrl);
    const seen = svc.logs.length;
    for (let i = 0; i < 1000; i += 50) await Promise.all(Array.from({ length: 50 }, () => abortedBody(svc.url)));
    const aborted = (s: typeof before) => s.value('user_service_http_peer_errors_total', { kind: 'aborted_body' });
    await eventually(async () => aborted(await scrape(svc.opsUrl)) - aborted(before) === 1000, 10_000, 50);
    const lines = svc.logs.slice(seen);
    expect(lines.filter((l) => (l.level as number) >= 40)).to.deep.equal([]);
    expect(JSON.stringify(lines)).not.to.include('stack');
    expect(svc.stderr.join('\n')).to.equal('');
    // The service still serves.
    expect((await post(svc.url, 'get', { openid: newOpenid() })).body.code).to.equal(-4);
  });
});
