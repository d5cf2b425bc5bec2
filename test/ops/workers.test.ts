import { expect } from 'chai';
import { newOpenid } from '../helpers/env';
import { post, loginBody } from '../helpers/http';
import { freePort } from '../helpers/redis-server';
import { spawnService, type SpawnedService } from '../helpers/spawned-service';
import { eventually } from '../helpers/wait';
import { children } from '../helpers/processes';
import { scrape } from '../helpers/metrics';

describe('WORKERS=2 (node:cluster, the real process)', function () {
  this.timeout(60_000);
  let svc: SpawnedService | undefined;

  afterEach(() => {
    if (svc?.proc.exitCode === null) svc.proc.kill('SIGKILL');
    for (const pid of svc?.proc.pid ? children(svc.proc.pid) : []) process.kill(pid, 'SIGKILL');
    svc = undefined;
  });

  it('serves from two processes, replaces a dead one, and drains all on SIGTERM', async () => {
    svc = await spawnService({ WORKERS: 2, PORT: await freePort(), SHUTDOWN_GRACE_MS: 5000 });
    const primary = svc.proc.pid!;
    await eventually(() => svc!.logs.filter((l) => l.msg === 'listening').length === 2, 20_000, 50);
    const first = children(primary);
    expect(first).to.have.length(2);

    const openid = newOpenid();
    const login = await post(svc.url, 'login', loginBody(openid, { nick_name: 'w' }));
    expect(login.body.code).to.equal(0);
    const answers = await Promise.all(Array.from({ length: 40 }, () => post(svc!.url, 'loginByOpenid', { openid })));
    for (const a of answers) expect(a.body.code).to.equal(0);

    process.kill(first[0]!, 'SIGKILL');
    await eventually(
      () => {
        const now = children(primary);
        return now.length === 2 && !now.includes(first[0]!);
      },
      20_000,
      50,
    );
    // The new worker can show up in /proc before the primary's log line comes through the pipe.
    await eventually(() => svc!.logs.some((l) => l.msg === 'worker died; starting another'), 5_000, 20);
    await eventually(() => svc!.logs.filter((l) => l.msg === 'listening').length === 3, 20_000, 50);
    for (let i = 0; i < 10; i++) expect((await post(svc.url, 'get', { openid })).body.code).to.equal(0);

    const workers = children(primary);
    svc.proc.kill('SIGTERM');
    const { code } = await svc.exited;
    expect(code).to.equal(0);
    expect(svc.logs.filter((l) => l.msg === 'shutdown complete')).to.have.length(2);
    for (const pid of workers) expect(() => process.kill(pid, 0)).to.throw();
  });

  it('answers /metrics for every worker: one scrape counts the requests both served', async () => {
    svc = await spawnService({ WORKERS: 2, PORT: await freePort(), OPS_PORT: await freePort() });
    await eventually(() => svc!.logs.filter((l) => l.msg === 'listening').length === 2, 20_000, 50);
    const openid = newOpenid();
    expect((await post(svc.url, 'login', loginBody(openid, { nick_name: 'm' }))).body.code).to.equal(0);
    // 20 at once open 20 connections, which node:cluster hands to the workers round-robin.
    const answers = await Promise.all(Array.from({ length: 20 }, () => post(svc!.url, 'get', { openid })));
    for (const a of answers) expect(a.body.code).to.equal(0);
    const labels = { route: 'get', code: '0', status: '200' };
    // Every scrape, whichever worker takes it, sums both: a single worker's count would be about 10.
    for (let i = 0; i < 4; i++) {
      const metrics = await scrape(svc.opsUrl);
      expect(metrics.value('user_service_http_requests_total', labels)).to.equal(20);
      expect(metrics.value('user_service_http_requests_total', { route: 'login', code: '0', status: '200' })).to.equal(
        1,
      );
      // The largest worker's RSS, not the sum of both.
      const rss = metrics.value('user_service_process_resident_memory_max_bytes');
      expect(rss).to.be.greaterThan(10e6).and.lessThan(metrics.value('process_resident_memory_bytes'));
    }
  });
});
