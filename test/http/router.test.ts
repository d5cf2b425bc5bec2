import Router from '@koa/router';
import { expect } from 'chai';
import Joi from 'joi';
import Koa from 'koa';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ServiceError } from '../../src/errors';
import { bodyParser } from '../../src/http/body';
import { envelope } from '../../src/http/envelope';
import { defineRoute, type RouteCheck } from '../../src/http/route';
import { anyPath, buildRouter, routerPaths } from '../../src/http/router';
import { post } from '../helpers/http';

describe('routerPaths and anyPath (what refuseUnrouted asks on every request)', () => {
  const router = new Router();
  router.post('/service/user/login', () => undefined);
  router.get('/docs/:asset', () => undefined);
  const health = new Router();
  health.get('/healthz', () => undefined);

  it('answers the same for a path asked again, past the paths it remembers, and never remembers a missing one', () => {
    const paths = routerPaths(router, health);
    expect(paths('/service/user/login')).to.deep.equal(['POST']);
    expect(paths('/service/user/login')).to.deep.equal(['POST']);
    // A parameter's paths have no end: past the remembered ones, each is still matched right.
    for (let i = 0; i < 1_000; i++) expect(paths(`/docs/asset-${i}`)).to.have.members(['GET', 'HEAD']);
    expect(paths('/healthz')).to.have.members(['GET', 'HEAD']);
    for (let i = 0; i < 3; i++) expect(paths('/service/user/nope')).to.equal(null);
  });

  it('holds at most 256 paths found and none missing, however many a caller sends', () => {
    // Each path 8 KB, as a long request line can carry: 4,000 of them remembered would be 32 MB.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const paths = routerPaths(router, health);
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 4_000; i++) {
      // Each its own text, as the HTTP parser hands every request its own.
      expect(paths(`/docs/${i}`.padEnd(8 * 1024, 'x'))).to.have.members(['GET', 'HEAD']);
      expect(paths(`/nowhere/${i}`.padEnd(8 * 1024, 'x'))).to.equal(null);
    }
    gc();
    // 256 × 8 KB = 2 MB remembered, with room for the heap's own noise.
    expect(process.memoryUsage().heapUsed - before).to.be.below(6 * 1024 * 1024);
  });

  it('keeps room for the real paths: missing ones sent first do not take it', () => {
    const counted = new Router();
    counted.post('/service/user/login', () => undefined);
    let matches = 0;
    const match = counted.match.bind(counted);
    counted.match = (path, method) => (matches++, match(path, method));
    const paths = routerPaths(counted);
    for (let i = 0; i < 1_000; i++) expect(paths(`/nowhere/${i}`)).to.equal(null);
    matches = 0;
    for (let i = 0; i < 3; i++) expect(paths('/service/user/login')).to.deep.equal(['POST']);
    expect(matches).to.equal(1);
  });

  it('joins several tables, and answers one table alone as it is', () => {
    const routes = routerPaths(router);
    const media = (path: string) => (path.startsWith('/media/') ? ['GET', 'HEAD'] : null);
    const both = (path: string) => (path === '/service/user/login' ? ['GET'] : null);
    expect(anyPath(routes, media)('/service/user/login')).to.equal(routes('/service/user/login'));
    expect(anyPath(routes, media)('/media/a.png')).to.deep.equal(['GET', 'HEAD']);
    expect(anyPath(routes, media)('/elsewhere')).to.equal(null);
    expect(anyPath(routes, both)('/service/user/login')).to.have.members(['POST', 'GET']);
  });
});

describe('buildRouter (the API dispatcher)', () => {
  let server: Server;
  let url: string;
  const calls: string[] = [];

  before(async () => {
    const spec = (name: string, handle: (input: { n?: number }) => Promise<unknown>) =>
      defineRoute<{ n?: number }>({
        name,
        summary: name,
        input: Joi.object({ n: Joi.number().integer() }),
        codes: { invalid: -1, unauthenticated: -10, other: -2 },
        handle,
      });
    const routes = [
      spec('echo', async (input) => (calls.push('echo'), input)),
      spec('other', async () => (calls.push('other'), 'other')),
    ];
    // Checks that answer at once (undefined), refuse at once (a throw) or wait (a promise).
    const guard = (): RouteCheck => (_ctx, input) => {
      const n = (input as { n?: number }).n;
      calls.push(`check ${n}`);
      if (n === 1) throw new ServiceError('unauthenticated', 'refused at once');
      if (n === 2) return Promise.reject(new ServiceError('unauthenticated', 'refused later'));
      if (n === 3) return new Promise((resolve) => setTimeout(resolve, 5));
      return undefined;
    };
    const app = new Koa();
    app.use(envelope());
    app.use(bodyParser('1kb'));
    app.use(buildRouter('/t', routes, [guard]).routes());
    server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise((r) => server.close(r)));
  beforeEach(() => (calls.length = 0));

  it('takes a route by its exact path, and every spelling @koa/router takes to the same route', async () => {
    for (const path of ['/t/echo', '/t/echo/', '/T/Echo', '/t/echo?x=1']) {
      expect((await post(url, path, { n: 7 })).body, path).to.deep.equal({ code: 0, msg: 'success', data: { n: 7 } });
    }
    expect((await post(url, '/t/other', {})).body.data).to.equal('other');
    expect(calls).to.deep.equal(
      ['check 7', 'echo', 'check 7', 'echo', 'check 7', 'echo', 'check 7', 'echo'].concat(['check undefined', 'other']),
    );
    // Neither the exact table nor the router has these: nothing runs, the envelope's 404.
    for (const path of ['/t/echoo', '/t', '/echo']) expect((await post(url, path, {})).status, path).to.equal(404);
    const get = await fetch(`${url}/t/echo`);
    expect(get.status).to.equal(404);
    expect(calls).to.deep.equal(
      ['check 7', 'echo', 'check 7', 'echo', 'check 7', 'echo', 'check 7', 'echo'].concat(['check undefined', 'other']),
    );
  });

  it('runs the handler after a check that answers at once or waits, and never after one that refuses', async () => {
    expect((await post(url, '/t/echo', { n: 1 })).body).to.deep.equal({
      code: -10,
      msg: 'refused at once',
      data: null,
    });
    expect((await post(url, '/t/echo', { n: 2 })).body).to.deep.equal({ code: -10, msg: 'refused later', data: null });
    expect((await post(url, '/t/echo', { n: 3 })).body.data).to.deep.equal({ n: 3 });
    expect((await post(url, '/t/echo', {})).body.data).to.deep.equal({});
    expect(calls).to.deep.equal(['check 1', 'check 2', 'check 3', 'echo', 'check undefined', 'echo']);
  });
});
