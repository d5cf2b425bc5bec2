import Router from '@koa/router';
import { expect } from 'chai';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { anyPath, routerPaths } from '../../src/http/router';

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
