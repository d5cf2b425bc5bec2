import { expect } from 'chai';
import Koa from 'koa';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { bodyParser, limitInBytes } from '../../src/http/body';

/** What a body parser made of a request: the parsed value, or the error it threw. */
interface Outcome {
  body?: unknown;
  error?: { status: number; name: string; message: string };
}

const LIMIT = '1kb';

/** A bare app: the parser under test, and an answer that shows what it did. */
function parserApp(): Koa {
  const app = new Koa();
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      const e = err as Error & { status?: number };
      ctx.body = { error: { status: e.status, name: e.name, message: e.message } };
    }
  });
  app.use(bodyParser(LIMIT));
  app.use((ctx) => {
    ctx.body = { body: ctx.request.body ?? null };
  });
  return app;
}

/** Sends raw bytes; chunked (no Content-Length) when `chunks` has more than one part. */
function send(url: string, contentType: string, chunks: Buffer[]): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { 'content-type': contentType };
    if (chunks.length === 1) headers['content-length'] = chunks[0]!.length;
    const req = request(url, { method: 'POST', headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c));
      res.on('end', () => resolve(JSON.parse(text) as Outcome));
    });
    req.on('error', reject);
    for (const c of chunks) req.write(c);
    req.end();
  });
}

describe('JSON body parsing (http/body.ts)', () => {
  let server: ReturnType<Koa['listen']>;
  let url: string;
  before(async () => {
    server = parserApp().listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(() => new Promise((r) => server.close(r)));

  const b = (s: string) => Buffer.from(s, 'utf8');
  const limit = limitInBytes(LIMIT);
  const cases: { name: string; chunks: Buffer[]; expect: Outcome | ((o: Outcome) => void) }[] = [
    { name: 'an object', chunks: [b('{"a":1,"b":"张三"}')], expect: { body: { a: 1, b: '张三' } } },
    { name: 'leading white space', chunks: [b(' \r\n\t{"a":1}')], expect: { body: { a: 1 } } },
    { name: 'a leading BOM', chunks: [b('\ufeff{"a":1}')], expect: { body: { a: 1 } } },
    { name: 'an empty body', chunks: [b('')], expect: { body: {} } },
    { name: 'an array', chunks: [b('[1,2]')], expect: { body: [1, 2] } },
    {
      name: 'invalid UTF-8 in a string',
      chunks: [Buffer.concat([b('{"a":"x'), Buffer.from([0xff, 0xc0]), b('y"}')])],
      expect: { body: { a: 'x\ufffd\ufffdy' } },
    },
    {
      name: 'a nested constructor.prototype (harmless in parsed JSON)',
      chunks: [b('{"a":{"constructor":{"prototype":{"x":1}}}}')],
      expect: { body: { a: { constructor: { prototype: { x: 1 } } } } },
    },
    { name: 'in three chunks', chunks: [b('{"a"'), b(':'), b('[1]}')], expect: { body: { a: [1] } } },
    {
      name: 'exactly the limit',
      chunks: [b(`{"a":"${'x'.repeat(limit - 8)}"}`)],
      expect: (o) => expect(o.body).to.be.an('object'),
    },
  ];
  const refused: { name: string; chunks: Buffer[]; status: number }[] = [
    { name: 'null', chunks: [b('null')], status: 400 },
    { name: 'a string', chunks: [b('"s"')], status: 400 },
    { name: 'a number', chunks: [b('12')], status: 400 },
    { name: 'truncated JSON', chunks: [b('{"a":')], status: 400 },
    { name: 'a __proto__ key', chunks: [b('{"__proto__":{"x":1}}')], status: 400 },
    { name: 'one byte over the limit, declared', chunks: [b(`{"a":"${'x'.repeat(limit - 7)}"}`)], status: 413 },
    {
      name: 'over the limit, chunked',
      chunks: [b(`{"a":"${'x'.repeat(600)}`), b(`${'x'.repeat(600)}"}`)],
      status: 413,
    },
  ];

  // application/vnd.api+json is JSON to koa-body as well, but not plain JSON to the fast path:
  // the same bytes under both types must come out the same.
  for (const c of cases) {
    it(`reads ${c.name} as koa-body does`, async () => {
      const fast = await send(url, 'application/json', c.chunks);
      const utf8 = await send(url, 'application/json; charset=UTF-8', c.chunks);
      const general = await send(url, 'application/vnd.api+json', c.chunks);
      if (typeof c.expect === 'function') c.expect(fast);
      else expect(fast).to.deep.equal(c.expect);
      expect(utf8).to.deep.equal(fast);
      expect(general).to.deep.equal(fast);
    });
  }
  for (const c of refused) {
    it(`refuses ${c.name} with ${c.status}, as koa-body does`, async () => {
      const fast = await send(url, 'application/json', c.chunks);
      const general = await send(url, 'application/vnd.api+json', c.chunks);
      expect(fast.error?.status).to.equal(c.status);
      expect(general.error?.status).to.equal(c.status);
      expect(fast.error?.name).to.equal(general.error?.name);
      if (c.status === 400) expect(fast.error?.name).to.equal('SyntaxError');
    });
  }

  it('reads a declared body that arrives in pieces, after its headers', async () => {
    const json = b('{"a":"' + 'y'.repeat(500) + '"}');
    const outcome = await new Promise<Outcome>((resolve, reject) => {
      const req = request(
        url,
        { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': json.length } },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c));
          res.on('end', () => resolve(JSON.parse(text) as Outcome));
        },
      );
      req.on('error', reject);
      req.flushHeaders();
      setTimeout(() => req.write(json.subarray(0, 100)), 30);
      setTimeout(() => req.end(json.subarray(100)), 60);
    });
    expect(outcome).to.deep.equal({ body: { a: 'y'.repeat(500) } });
  });

  it('keeps serving on the same connection after refusing a body', async () => {
    const over = await send(url, 'application/json', [b(`{"a":"${'x'.repeat(2000)}"}`)]);
    expect(over.error?.status).to.equal(413);
    expect(await send(url, 'application/json', [b('{"ok":true}')])).to.deep.equal({ body: { ok: true } });
  });

  it('reads BODY_LIMIT as koa-body does', () => {
    expect(limitInBytes('100b')).to.equal(100);
    expect(limitInBytes('64kb')).to.equal(65536);
    expect(limitInBytes('1MB')).to.equal(1048576);
    expect(() => limitInBytes('1gb')).to.throw();
  });
});

// In a fresh process, since this suite's own process may have loaded koa-body: the whole
// service's modules, then a parser that has read JSON, then one that has read a form. koa-body
// with zod, co-body and formidable holds about 4 MiB of heap that V8 grows the old space for.
const WHEN_KOA_BODY_LOADS = `
const { sep } = require('node:path');
const Koa = require('koa');
const loaded = () => Object.keys(require.cache).some((f) => f.includes(sep + 'koa-body' + sep));
require('./src/server');
const { bodyParser } = require('./src/http/body');
const app = new Koa();
app.use(bodyParser('1kb'));
app.use((ctx) => { ctx.body = ctx.request.body; });
const server = app.listen(0, '127.0.0.1', async () => {
  const url = 'http://127.0.0.1:' + server.address().port + '/';
  const post = (type, body) => fetch(url, { method: 'POST', headers: { 'content-type': type }, body }).then((r) => r.json());
  const out = { atStart: loaded() };
  out.json = await post('application/json', '{"a":1}');
  out.afterJson = loaded();
  out.form = await post('application/x-www-form-urlencoded', 'a=1');
  out.afterForm = loaded();
  process.stdout.write(JSON.stringify(out));
  server.close();
});
`;

describe('koa-body not loaded (http/body.ts)', () => {
  it('is loaded neither by the service nor by a JSON body or a form', async function () {
    this.timeout(30_000);
    const { stdout } = await promisify(execFile)(process.execPath, ['-r', 'tsx/cjs', '-e', WHEN_KOA_BODY_LOADS], {
      cwd: resolve(__dirname, '../..'),
    });
    expect(JSON.parse(stdout)).to.deep.equal({
      atStart: false,
      json: { a: 1 },
      afterJson: false,
      form: { a: '1' },
      afterForm: false,
    });
  });
});
