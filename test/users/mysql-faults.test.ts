import { expect } from 'chai';
import type { Server } from 'node:http';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { createApp } from '../../src/app';
import { createLogger } from '../../src/logger';
import { createServices, type Services } from '../../src/services';
import { newOpenid, testConfig } from '../helpers/env';
import { post } from '../helpers/http';
import { freePort } from '../helpers/redis-server';
import { startService } from '../helpers/service';

/** A TCP server that accepts connections and never answers: a hung MySQL. */
async function blackhole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets: Socket[] = [];
  const server: NetServer = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The service built against a MySQL that is not there (no start-up migration step). */
async function serviceWithDatabaseAt(port: number) {
  const config = testConfig({
    DATABASE_URL: `mysql://root@127.0.0.1:${port}/nowhere`,
    DB_ACQUIRE_TIMEOUT_MS: 1500,
  });
  const services: Services = await createServices(config, createLogger('silent'));
  const app = createApp({
    logger: createLogger('silent'),
    users: services.users,
    bodyLimit: '1mb',
    metrics: services.metrics,
    readiness: services.readiness,
  });
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    call: (route: string, body: unknown) => post(url, route, body),
    close: async () => {
      await new Promise((r) => server.close(r));
      await services.close();
    },
  };
}

describe('MySQL unreachable', function () {
  this.timeout(30_000);

  for (const kind of ['refusing connections', 'accepting and never answering']) {
    it(`answers each route's "other error" code within a few seconds when MySQL is ${kind}`, async () => {
      const hole = kind.startsWith('refusing') ? null : await blackhole();
      const port = hole ? hole.port : await freePort();
      const svc = await serviceWithDatabaseAt(port);
      try {
        const openid = newOpenid();
        const cases: [string, unknown, number][] = [
          ['login', { openid, nick_name: 'n', avatar: 'https://e.com/a', gender: 0, phone: '1' }, -2],
          ['loginByOpenid', { openid }, -2],
          ['get', { openid }, -3],
          ['update', { user_id: 1, update: { phone: '2' } }, -2],
        ];
        for (const [route, body, code] of cases) {
          const start = performance.now();
          const res = await svc.call(route, body);
          const ms = performance.now() - start;
          expect(res.status, route).to.equal(200);
          expect(res.body.code, route).to.equal(code);
          expect(res.text, route).to.not.match(/at .*\.(ts|js):\d+/);
          expect(ms, route).to.be.below(5_000);
        }
      } finally {
        await svc.close();
        await hole?.close();
      }
    });
  }

  it('still answers cached users while MySQL is unreachable', async () => {
    // Fill the cache through a healthy service, then read it through one without MySQL:
    // both use the same Redis prefix.
    const healthy = await startService();
    const openid = newOpenid();
    const login = await healthy.call('login', {
      openid,
      nick_name: 'n',
      avatar: 'https://e.com/a',
      gender: 0,
      phone: '1',
    });
    await healthy.stop();
    const svc = await serviceWithDatabaseAt(await freePort());
    try {
      const res = await svc.call('loginByOpenid', { openid });
      expect(res.body.code).to.equal(0);
      expect(res.body.data).to.deep.equal(login.body.data);
    } finally {
      await svc.close();
    }
  });
});
