import { expect } from 'chai';
import Joi from 'joi';
import Koa from 'koa';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { deflateSync, gzipSync } from 'node:zlib';
import { bodyParser } from '../../src/http/body';
import type { RouteSpec } from '../../src/http/route';
import { buildRouter } from '../../src/http/router';
import { bomb, keysBody, rawPost, stalledConnection, type Stall } from '../helpers/attacks';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { loginBody, post } from '../helpers/http';
import { scrape } from '../helpers/metrics';
import { startService, type TestService } from '../helpers/service';
import { eventually } from '../helpers/wait';

const LIMIT = 16 * 1024;
const JSON_TYPE = { 'content-type': 'application/json' };

describe('hostile traffic: bounds per request and per process', function () {
  this.timeout(30_000);
  let svc: TestService;
  let wechat: FakeWechat;
  let openid: string;

  before(async () => {
    wechat = await new FakeWechat().start();
    wechat.on('slow', { delayMs: 3000, body: { openid: 'slow-openid', session_key: 'k' } });
    svc = await startService({
      WECHAT_API_BASE: wechat.url,
      MAX_INFLIGHT: 4,
      WECHAT_TIMEOUT_MS: 5000,
      HTTP_HEADERS_TIMEOUT_MS: 1000,
      HTTP_REQUEST_TIMEOUT_MS: 2000,
    });
    openid = newOpenid('abuse');
    expect((await svc.call('login', loginBody(openid))).body.code).to.equal(0);
  });
  after(async () => {
    await svc.stop();
    await wechat.stop();
  });

  const loginByOpenid = () => svc.call('loginByOpenid', { openid });

  it('answers 413 to 13 concurrent gzip bombs and a deflate one (1 KB inflating to 1 MB), then serves', async () => {
    const gzip = bomb('gzip', openid);
    const deflate = bomb('deflate', openid);
    expect(gzip.length).to.be.below(2048);
    const answers = await Promise.all([
      ...Array.from({ length: 13 }, () =>
        rawPost(svc.url, '/service/user/loginByOpenid', gzip, { ...JSON_TYPE, 'content-encoding': 'gzip' }),
      ),
      rawPost(svc.url, '/service/user/loginByOpenid', deflate, { ...JSON_TYPE, 'content-encoding': 'deflate' }),
    ]);
    for (const a of answers) {
      expect(a.status).to.equal(413);
      expect(a.body).to.deep.equal({ code: 413, msg: 'request body too large', data: null });
    }
    expect((await loginByOpenid()).body.code).to.equal(0);
  });

  it('bounds the compressed input as well: 20 KiB of deflate that inflates to nothing is 413', async () => {
    // Empty stored blocks: five bytes each, no output. Counting only the output never stops it.
    const empty = Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]);
    const endless = Buffer.concat([Buffer.from([0x78, 0x01]), ...Array(4200).fill(empty)]);
    const a = await rawPost(svc.url, '/service/user/get', endless, { ...JSON_TYPE, 'content-encoding': 'deflate' });
    expect(a.status).to.equal(413);
  });

  it('answers a body of exactly 16 KiB full of keys, plain, gzip, deflate and as a form; one byte more is 413', async () => {
    const atLimit = keysBody(openid, LIMIT);
    const over = keysBody(openid, LIMIT + 1);
    const path = '/service/user/loginByOpenid';
    for (const [encoding, encode] of [
      ['identity', (b: Buffer) => b],
      ['gzip', (b: Buffer) => gzipSync(b)],
      ['deflate', (b: Buffer) => deflateSync(b)],
    ] as const) {
      const ok = await rawPost(svc.url, path, encode(atLimit), { ...JSON_TYPE, 'content-encoding': encoding });
      expect(ok.body.code, encoding).to.equal(0);
      expect(ok.body.data.openid).to.equal(openid);
      const big = await rawPost(svc.url, path, encode(over), { ...JSON_TYPE, 'content-encoding': encoding });
      expect(big.status, encoding).to.equal(413);
    }
    const form = (size: number) => {
      const head = `openid=${openid}&x=`;
      return Buffer.from(head + 'a'.repeat(size - head.length));
    };
    const formType = { 'content-type': 'application/x-www-form-urlencoded' };
    expect((await rawPost(svc.url, path, form(LIMIT), formType)).body.code).to.equal(0);
    expect((await rawPost(svc.url, path, form(LIMIT + 1), formType)).status).to.equal(413);
  });

  it('answers 415 to a Content-Encoding other than identity, gzip or deflate', async () => {
    const json = Buffer.from(JSON.stringify({ openid }));
    for (const encoding of ['br', 'compress', 'gzip, gzip', 'identity, gzip', 'x-gzip', 'garbage', 'zstd']) {
      const a = await rawPost(svc.url, '/service/user/loginByOpenid', json, {
        ...JSON_TYPE,
        'content-encoding': encoding,
      });
      expect(a.status, encoding).to.equal(415);
      expect(a.body.code, encoding).to.equal(415);
      expect(a.body.data, encoding).to.equal(null);
    }
    // The names are not case-sensitive.
    const gz = await rawPost(svc.url, '/service/user/loginByOpenid', gzipSync(json), {
      ...JSON_TYPE,
      'content-encoding': 'GZip',
    });
    expect(gz.body.code).to.equal(0);
  });

  it('answers 400 / code -1 to a body that is not what its Content-Encoding says', async () => {
    const a = await rawPost(svc.url, '/service/user/get', Buffer.from('{"openid":"x"}'), {
      ...JSON_TYPE,
      'content-encoding': 'gzip',
    });
    expect(a.body.code).to.equal(-1);
  });

  it('cuts 300 half-open connections at the HTTP timeouts, and serves normal requests meanwhile', async () => {
    const kinds: Stall[] = ['silent', 'half headers', 'half body'];
    const start = performance.now();
    const stalled = await Promise.all(
      Array.from({ length: 300 }, (_, i) => stalledConnection(svc.url, kinds[i % kinds.length]!)),
    );
    for (let i = 0; i < 5; i++) {
      const answer = await loginByOpenid();
      expect(answer.body.code).to.equal(0);
    }
    // Headers within 1 s, the whole request within 2 s (checked every 500 ms).
    await Promise.all(stalled.map((s) => s.closed));
    expect(performance.now() - start).to.be.below(5000);
    expect((await loginByOpenid()).body.code).to.equal(0);
  });

  it('sheds a storm past MAX_INFLIGHT: 503 and Retry-After at once, counted in /metrics; /healthz still 200', async () => {
    const before = await scrape(svc.opsUrl);
    // Four requests held at a slow WeChat fill MAX_INFLIGHT=4.
    const held = Array.from({ length: 4 }, () => svc.call('getOpenid', { js_code: 'slow' }));
    await eventually(
      async () => (await scrape(svc.opsUrl)).value('user_service_http_inflight_requests') === 4,
      5000,
      20,
    );
    let heldAnswered = false;
    void Promise.all(held).then(() => (heldAnswered = true));
    const storm = await Promise.all(Array.from({ length: 30 }, () => loginByOpenid()));
    // Shed at once, not queued behind the held requests (which take 3 s).
    expect(heldAnswered).to.equal(false);
    for (const answer of storm) {
      expect(answer.status).to.equal(503);
      expect(answer.headers.get('retry-after')).to.equal('1');
      expect(answer.body).to.deep.equal({ code: 503, msg: 'server busy, retry later', data: null });
    }
    const health = await fetch(`${svc.url}/healthz`);
    expect(health.status).to.equal(200);
    const during = await scrape(svc.opsUrl);
    expect(during.value('user_service_http_shed_total') - before.value('user_service_http_shed_total')).to.equal(30);
    expect(
      during.value('user_service_http_requests_total', { route: 'unmatched', code: '503', status: '503' }),
    ).to.be.at.least(30);
    for (const answer of await Promise.all(held)) expect(answer.body.code).to.equal(0);
    expect((await loginByOpenid()).body.code).to.equal(0);
    expect((await scrape(svc.opsUrl)).value('user_service_http_inflight_requests')).to.equal(0);
  });

  it('serves /metrics, /readyz, /docs and /openapi.json on the ops port only; /healthz on both', async () => {
    for (const path of ['/metrics', '/readyz', '/docs', '/openapi.json']) {
      const api = await fetch(`${svc.url}${path}`);
      expect(api.status, path).to.equal(404);
      expect(await api.json(), path).to.include({ code: 404 });
      const ops = await fetch(`${svc.opsUrl}${path}`);
      expect(ops.status, path).to.equal(200);
      await ops.arrayBuffer();
    }
    for (const url of [svc.url, svc.opsUrl]) expect((await fetch(`${url}/healthz`)).status).to.equal(200);
    // The ops port reads no bodies of its own.
    const posted = await fetch(`${svc.opsUrl}/metrics`, { method: 'POST', headers: JSON_TYPE, body: '{}' });
    expect(posted.status).to.equal(405);
  });
});

describe('the parsed body after validation (http/router.ts)', () => {
  let server: Server;
  let url: string;
  const seen: unknown[] = [];

  before(async () => {
    const route: RouteSpec = {
      name: 'echo',
      summary: 'echo',
      input: Joi.object({ openid: Joi.string().required() }),
      codes: { invalid: -1, other: -2 },
      handle: async (input, ctx) => {
        seen.push(ctx.request.body);
        return input;
      },
    };
    // A guard that waits, as the rate limit and the session check do on Redis.
    const guard = () => async (ctx: Koa.Context) => {
      await new Promise((r) => setTimeout(r, 5));
      seen.push(ctx.request.body);
    };
    const app = new Koa();
    app.use(async (ctx, next) => {
      await next();
      ctx.body = { data: (ctx.state as { data?: unknown }).data };
    });
    app.use(bodyParser('16kb'));
    app.use(buildRouter('/p', [route], [guard]).routes());
    server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise((r) => server.close(r)));

  it('is let go before the guards run: only a token field stays', async () => {
    const answer = await post(url, '/p/echo', { openid: 'a', token: 't', x: Array(1000).fill({}) });
    expect(answer.body.data).to.deep.equal({ openid: 'a' });
    expect(seen).to.deep.equal([{ token: 't' }, { token: 't' }]);
    seen.length = 0;
    await post(url, '/p/echo', { openid: 'a', x: Array(1000).fill({}) });
    expect(seen).to.deep.equal([undefined, undefined]);
  });
});
