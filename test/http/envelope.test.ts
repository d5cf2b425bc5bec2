import { expect } from 'chai';
import type { Server } from 'node:http';
import Joi from 'joi';
import Koa from 'koa';
import { ServiceError } from '../../src/errors';
import { bodyParser } from '../../src/http/body';
import { envelope } from '../../src/http/envelope';
import { buildRouter } from '../../src/http/router';
import { defineRoute, RawJson, type CodeTable, type RouteSpec } from '../../src/http/route';
import { newOpenid } from '../helpers/env';
import { post } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';

describe('envelope and body parsing', () => {
  describe('through the real service', () => {
    let svc: TestService;
    before(async () => (svc = await startService()));
    after(() => svc.stop());

    it('answers a malformed JSON body with code -1 and HTTP 200', async () => {
      for (const raw of ['{"openid":', '{bad json}', '"just a string"', '{"__proto__":{"x":1}}']) {
        const res = await svc.call('get', null, { raw });
        expect(res.status, raw).to.equal(200);
        expect(res.body.code, raw).to.equal(-1);
        expect(res.body.data).to.equal(null);
      }
    });

    it('refuses a body over the limit with 413 and keeps serving', async () => {
      const openid = newOpenid();
      const big = JSON.stringify({ openid, pad: 'x'.repeat(1024 * 1024 + 10) });
      const res = await svc.call('get', null, { raw: big });
      expect(res.status).to.equal(413);
      expect(res.body.code).to.equal(413);
      const form = await svc.call('get', null, {
        raw: `openid=${openid}&pad=${'x'.repeat(1024 * 1024 + 10)}`,
        contentType: 'application/x-www-form-urlencoded',
      });
      expect(form.status).to.equal(413);
      expect((await svc.call('get', { openid })).body.code).to.equal(-4);
    });

    it('answers an unknown route with 404 and a JSON body, a GET with 405', async () => {
      const res = await svc.call('/service/user/nope', {});
      expect(res.status).to.equal(404);
      expect(res.body).to.include({ code: 404 });
      const get = await fetch(`${svc.url}/service/user/get`);
      expect(get.status).to.equal(405);
      expect(((await get.json()) as { code: number }).code).to.equal(405);
    });

    it('answers -1 for content types it does not read', async () => {
      for (const contentType of ['text/plain', 'application/xml', 'multipart/form-data; boundary=x']) {
        const res = await svc.call('get', null, { raw: 'openid=x', contentType });
        expect(res.status, contentType).to.equal(200);
        expect(res.body.code, contentType).to.equal(-1);
      }
    });
  });

  describe('in a bare Koa app', () => {
    let server: Server;
    let url: string;
    const reported: unknown[] = [];

    before(async () => {
      const spec = (name: string, codes: CodeTable, handle: () => Promise<unknown>): RouteSpec =>
        defineRoute({ name, summary: name, input: Joi.object(), codes, handle });
      const routes: RouteSpec[] = [
        spec('bug', { invalid: -1, other: -3 }, async () => JSON.parse('{')),
        spec('gone', { invalid: -1, notFound: -4, other: -3 }, async () => {
          throw new ServiceError('notFound', 'no such user');
        }),
        spec('upstream', { invalid: -1, other: -2 }, async () => {
          throw new ServiceError('upstream', 'wechat: busy');
        }),
        spec('raw', { invalid: -1, other: -2 }, async () => new RawJson('{"a":[1,2]}')),
        spec('plain', { invalid: -1, other: -2 }, async () => ({ b: '✓' })),
      ];
      const app = new Koa();
      app.on('error', (err) => reported.push(err));
      app.use(envelope());
      app.use(bodyParser('1kb'));
      app.use(buildRouter('/t', routes).routes());
      server = app.listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    });
    after(() => new Promise((r) => server.close(r)));

    it('turns a programmer error into the route\'s "other" code without a stack, and reports it', async () => {
      const res = await post(url, '/t/bug', {});
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({ code: -3, msg: 'internal error', data: null });
      expect(reported).to.have.length(1);
      expect(reported[0]).to.be.instanceOf(SyntaxError);
    });

    it('maps a failure kind to the route\'s own code, falling back to "other"', async () => {
      expect((await post(url, '/t/gone', {})).body).to.deep.equal({ code: -4, msg: 'no such user', data: null });
      expect((await post(url, '/t/upstream', {})).body.code).to.equal(-2);
    });

    it('splices pre-serialised JSON and serialises objects the same way', async () => {
      const raw = await post(url, '/t/raw', {});
      expect(raw.text).to.equal('{"code":0,"msg":"success","data":{"a":[1,2]}}');
      expect(raw.headers.get('content-type')).to.equal('application/json; charset=utf-8');
      expect((await post(url, '/t/plain', {})).body).to.deep.equal({ code: 0, msg: 'success', data: { b: '✓' } });
    });
  });
});
