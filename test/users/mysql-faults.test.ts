import { expect } from 'chai';
import type { Server } from 'node:http';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { createApp, createOpsApp } from '../../src/app';
import { createLogger } from '../../src/logger';
import { createServices, type Services } from '../../src/services';
import { watchService } from '../helpers/contract';
import { newOpenid, testConfig } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { post, userPart, loginBody } from '../helpers/http';
import { TestMariadbServer } from '../helpers/mariadb-server';
import { scrape } from '../helpers/metrics';
import { freePort } from '../helpers/redis-server';
import { startService, type TestService } from '../helpers/service';
import { eventually, timed } from '../helpers/wait';

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
async function serviceWithDatabaseAt(port: number, env: Record<string, string> = {}) {
  const config = testConfig({
    DATABASE_URL: `mysql://root@127.0.0.1:${port}/nowhere`,
    DB_ACQUIRE_TIMEOUT_MS: 1500,
    ...env,
  });
  const services: Services = await createServices(config, createLogger('silent'));
  const app = createApp(config, services, createLogger('silent'));
  const server: Server = app.listen(0, '127.0.0.1');
  const opsServer: Server = createOpsApp(services, createLogger('silent')).listen(0, '127.0.0.1');
  await Promise.all([server, opsServer].map((s) => new Promise((r) => s.once('listening', r))));
  const urlOf = (s: Server) => `http://127.0.0.1:${(s.address() as { port: number }).port}`;
  const url = urlOf(server);
  // Its answers, MySQL down, are held to the document like any service's (helpers/contract.ts).
  const unwatch = await watchService(url, urlOf(opsServer));
  return {
    url,
    opsUrl: urlOf(opsServer),
    call: (route: string, body: unknown) => post(url, route, body),
    close: async () => {
      unwatch();
      await new Promise((r) => server.close(r));
      await new Promise((r) => opsServer.close(r));
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
          ['login', loginBody(openid), -2],
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

  it('does not waste a js_code: getOpenid still answers, with a session not bound to a user', async () => {
    const wechat = await new FakeWechat().start();
    const openid = newOpenid();
    wechat.on('code-db-down', { body: { openid, session_key: 'sk' } });
    const svc = await serviceWithDatabaseAt(await freePort(), { WECHAT_API_BASE: wechat.url });
    try {
      const before = await scrape(svc.opsUrl);
      const res = await svc.call('getOpenid', { js_code: 'code-db-down' });
      expect(res.body.code).to.equal(0);
      expect(res.body.data.openid).to.equal(openid);
      expect(res.body.data.token).to.match(/^[A-Za-z0-9_-]{32}$/);
      // The failed lookup is counted once, where it failed.
      const after = await scrape(svc.opsUrl);
      expect(
        after.value('user_service_mysql_errors_total', { op: 'find' }) -
          before.value('user_service_mysql_errors_total', { op: 'find' }),
      ).to.equal(1);
    } finally {
      await svc.close();
      await wechat.stop();
    }
  });

  it('still answers cached users while MySQL is unreachable', async () => {
    // Fill the cache through a healthy service, then read it through one without MySQL:
    // both use the same Redis prefix.
    const healthy = await startService();
    const openid = newOpenid();
    const login = await healthy.call('login', loginBody(openid));
    await healthy.stop();
    const svc = await serviceWithDatabaseAt(await freePort());
    try {
      const res = await svc.call('loginByOpenid', { openid });
      expect(res.body.code).to.equal(0);
      expect(userPart(res.body.data)).to.deep.equal(userPart(login.body.data));
    } finally {
      await svc.close();
    }
  });
});

describe('MySQL stopped, paused and back (a mariadbd owned by this test)', function () {
  this.timeout(90_000);
  let mariadb: TestMariadbServer;
  let svc: TestService;
  // Generous bounds: DB_ACQUIRE_TIMEOUT_MS and DB_QUERY_TIMEOUT_MS below, plus scheduling.
  const BOUND_MS = 5_000;

  const profile = (openid: string) => loginBody(openid);
  const readyz = async () => {
    const res = await fetch(`${svc.opsUrl}/readyz`);
    return { status: res.status, body: (await res.json()) as any };
  };

  before(async () => {
    const { ms } = await timed(async () => (mariadb = await TestMariadbServer.create()));
    console.log(`      (own mariadbd: installed and started in ${Math.round(ms)} ms)`);
    svc = await startService({
      DATABASE_URL: `${mariadb.url}/user_service_faults`,
      DB_ACQUIRE_TIMEOUT_MS: 1500,
      DB_QUERY_TIMEOUT_MS: 2000,
      READY_TIMEOUT_MS: 1000,
    });
  });
  after(async () => {
    mariadb?.resume();
    await svc?.stop();
    await mariadb?.destroy();
  });

  it('stopped: answers "other error" within a few seconds, /readyz names MySQL, cached reads still answer, then recovers by itself', async () => {
    const cached = newOpenid();
    const cachedUser = userPart((await svc.call('login', profile(cached))).body.data);
    const uncached = newOpenid();
    await svc.call('login', profile(uncached));
    await svc.call('logout', { openid: uncached }); // drops its cached profile
    const before = await scrape(svc.opsUrl);

    const stop = await timed(() => mariadb.stop());

    const down = await readyz();
    expect(down.status).to.equal(503);
    expect(down.body.checks.mysql.ok).to.equal(false);
    expect(down.body.checks.redis.ok).to.equal(true);

    for (const route of ['loginByOpenid', 'get']) {
      const res = await svc.call(route, { openid: cached });
      expect(res.body.code, route).to.equal(0);
      expect(userPart(res.body.data), route).to.deep.equal(cachedUser);
    }

    const newcomer = newOpenid();
    const cases: [string, unknown, number][] = [
      ['loginByOpenid', { openid: uncached }, -2],
      ['get', { openid: uncached }, -3],
      ['login', profile(newcomer), -2],
      ['update', { user_id: cachedUser.user_id, update: { phone: '2' } }, -2],
    ];
    for (const [route, body, code] of cases) {
      const { value, ms } = await timed(() => svc.call(route, body));
      expect(value.status, route).to.equal(200);
      expect(value.body.code, route).to.equal(code);
      expect(ms, route).to.be.below(BOUND_MS);
    }
    // Three times the pool's size at once: none waits on the pool for ever.
    const burst = await timed(() =>
      Promise.all(Array.from({ length: 30 }, () => svc.call('get', { openid: newOpenid() }))),
    );
    expect(burst.value.map((r) => r.body.code)).to.deep.equal(Array(30).fill(-3));
    expect(burst.ms).to.be.below(BOUND_MS);
    const during = await scrape(svc.opsUrl);
    expect(
      during.value('user_service_mysql_errors_total', { op: 'find' }) -
        before.value('user_service_mysql_errors_total', { op: 'find' }),
    ).to.equal(32);
    // The cached profile was not touched by the refused update.
    expect((await svc.call('get', { openid: cached })).body.data).to.deep.equal(cachedUser);

    const start = await timed(() => mariadb.start());
    const recovered = await eventually(async () => (await readyz()).status === 200, 20_000);
    expect((await svc.call('loginByOpenid', { openid: uncached })).body.code).to.equal(0);
    expect((await svc.call('login', profile(newcomer))).body.code).to.equal(0);
    const update = await svc.call('update', { user_id: cachedUser.user_id, update: { phone: '2' } });
    expect(update.body.code).to.equal(0);
    expect((await svc.call('get', { openid: cached })).body.data.phone).to.equal('2');
    console.log(
      `      (mariadbd stop ${Math.round(stop.ms)} ms, start ${Math.round(start.ms)} ms, ` +
        `service ready ${Math.round(recovered)} ms after; 30 refused reads in ${Math.round(burst.ms)} ms)`,
    );
  });

  it('paused (SIGSTOP): calls and /readyz are still bounded, and all is well once it resumes', async () => {
    const openid = newOpenid();
    const { user_id } = (await svc.call('login', profile(openid))).body.data;
    await svc.call('logout', { openid });
    // Warm the pool so that some connections are open when the server freezes.
    await Promise.all(Array.from({ length: 5 }, () => svc.call('get', { openid })));

    mariadb.pause();
    try {
      const burst = await timed(() =>
        Promise.all(Array.from({ length: 15 }, () => svc.call('get', { openid: newOpenid() }))),
      );
      expect(burst.value.map((r) => r.body.code)).to.deep.equal(Array(15).fill(-3));
      expect(burst.ms).to.be.below(BOUND_MS);
      const { value: down, ms } = await timed(readyz);
      expect(down.status).to.equal(503);
      expect(down.body.checks.mysql.ok).to.equal(false);
      expect(ms).to.be.below(BOUND_MS);
      const upd = await timed(() => svc.call('update', { user_id, update: { phone: '3' } }));
      expect(upd.value.body.code).to.equal(-2);
      expect(upd.ms).to.be.below(BOUND_MS);
    } finally {
      mariadb.resume();
    }
    await eventually(async () => (await readyz()).status === 200, 20_000);
    const all = await Promise.all(Array.from({ length: 15 }, () => svc.call('get', { openid })));
    expect(all.map((r) => r.body.code)).to.deep.equal(Array(15).fill(0));
    expect(all[0].body.data.phone).to.equal('1'); // the refused update changed nothing
    expect((await svc.call('update', { user_id, update: { phone: '3' } })).body.code).to.equal(0);
  });
});
