import Router from '@koa/router';
import { expect } from 'chai';
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
