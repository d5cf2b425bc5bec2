import { expect } from 'chai';
import { newOpenid } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { scrape } from '../helpers/metrics';
import { TestRedisServer } from '../helpers/redis-server';
import { startService, type TestService } from '../helpers/service';
import { eventually } from '../helpers/wait';

function profile(openid: string) {
  return loginBody(openid);
}

const getJson = async (url: string) => {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as any, headers: res.headers };
};

describe('health, readiness and metrics', function () {
  this.timeout(30_000);
  let svc: TestService;
  let redisServer: TestRedisServer;

  before(async () => {
    redisServer = await TestRedisServer.start();
    svc = await startService({ REDIS_URL: redisServer.url, REDIS_COMMAND_TIMEOUT_MS: 200, READY_TIMEOUT_MS: 1000 });
  });
  after(async () => {
    await svc.stop();
    await redisServer.kill();
  });

  it('GET /healthz answers 200 while the process runs', async () => {
    const res = await getJson(`${svc.url}/healthz`);
    expect(res.status).to.equal(200);
    expect(res.body).to.deep.equal({ status: 'ok' });
    expect(res.headers.get('cache-control')).to.equal('no-store');
  });

  it('GET /readyz answers 200 when MySQL and Redis answer', async () => {
    const res = await getJson(`${svc.opsUrl}/readyz`);
    expect(res.status).to.equal(200);
    expect(res.body.status).to.equal('ready');
    expect(res.body.checks.mysql.ok).to.equal(true);
    expect(res.body.checks.redis.ok).to.equal(true);
  });

  it('GET /metrics counts requests by route and document code, with a latency histogram', async () => {
    const before = await scrape(svc.opsUrl);
    expect(before.contentType).to.match(/^text\/plain; version=0\.0\.4/);
    const openid = newOpenid();
    await svc.call('login', profile(openid));
    await svc.call('get', {});
    await svc.call('get', {});
    await svc.call('get', { openid: newOpenid() });
    await svc.call('/service/user/nope', {});
    const after = await scrape(svc.opsUrl);
    const delta = (name: string, labels: Record<string, string>) =>
      after.value(name, labels) - before.value(name, labels);
    expect(delta('user_service_http_requests_total', { route: 'login', code: '0', status: '200' })).to.equal(1);
    expect(delta('user_service_http_requests_total', { route: 'get', code: '-1', status: '200' })).to.equal(2);
    expect(delta('user_service_http_requests_total', { route: 'get', code: '-4', status: '200' })).to.equal(1);
    expect(delta('user_service_http_requests_total', { route: 'unmatched', code: '404', status: '404' })).to.equal(1);
    expect(delta('user_service_http_request_duration_seconds_count', { route: 'get', code: '-1' })).to.equal(2);
    expect(
      after.value('user_service_http_request_duration_seconds_bucket', { route: 'get', code: '-1', le: '+Inf' }),
    ).to.be.at.least(2);
    // Probes are counted under their own names, never under a raw path.
    expect(
      after.value('user_service_http_requests_total', { route: 'readyz', code: 'none', status: '200' }),
    ).to.be.at.least(1);
    expect(after.text).to.not.include('route="/service/user/nope"');
  });

  it('holds the request series to routes and codes, however many paths, methods and fields callers send', async () => {
    const series = (text: string) => text.split('\n').filter((l) => /^user_service_http_request/.test(l)).length;
    const openid = newOpenid();
    await svc.call('login', profile(openid));
    const before = await scrape(svc.opsUrl);
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < 300; i++) {
      // Unknown paths, other methods, and bodies each with a field of its own.
      sends.push(svc.call(`/service/user/nope${i}`, {}));
      sends.push(
        fetch(`${svc.url}/service/user/get?x=${i}`, { method: i % 2 ? 'PUT' : 'DELETE' }).then((r) => r.text()),
      );
      sends.push(svc.call('get', { openid, [`k${i}`]: i }));
    }
    await Promise.all(sends);
    const after = await scrape(svc.opsUrl);
    // At most: unmatched 404, get 405, get 0 (each a counter series and a histogram's 15 lines).
    expect(series(after.text) - series(before.text)).to.be.at.most(3 * 16);
    expect(after.value('user_service_http_requests_total', { route: 'get', code: '0', status: '200' })).to.be.at.least(
      300,
    );
    expect(after.text).to.not.match(/nope\d|k\d|route="\//);
  });

  it('counts cache hits and misses, and reports the DB pool and the process', async () => {
    const openid = newOpenid();
    await svc.call('login', profile(openid)); // fills the cache
    await svc.call('logout', { openid }); // drops it
    const before = await scrape(svc.opsUrl);
    await svc.call('loginByOpenid', { openid }); // miss, then filled
    await svc.call('loginByOpenid', { openid }); // hit
    await svc.call('get', { openid }); // hit
    const after = await scrape(svc.opsUrl);
    expect(after.value('user_service_cache_misses_total') - before.value('user_service_cache_misses_total')).to.equal(
      1,
    );
    expect(after.value('user_service_cache_hits_total') - before.value('user_service_cache_hits_total')).to.equal(2);
    expect(after.text).to.match(/^user_service_db_pool_connections\{state="used"\} \d+$/m);
    expect(after.value('user_service_db_pool_max')).to.equal(10);
    expect(after.value('process_cpu_user_seconds_total')).to.be.greaterThan(0);
    expect(after.value('nodejs_heap_size_used_bytes')).to.be.greaterThan(0);
  });

  it('says which store failed: /readyz 503 naming Redis, Redis errors counted, back when it returns', async () => {
    const openid = newOpenid();
    await svc.call('login', profile(openid));
    await svc.call('logout', { openid });
    const before = await scrape(svc.opsUrl);
    await redisServer.kill();
    try {
      const down = await getJson(`${svc.opsUrl}/readyz`);
      expect(down.status).to.equal(503);
      expect(down.body.status).to.equal('not ready');
      expect(down.body.checks.redis.ok).to.equal(false);
      expect(down.body.checks.redis.error).to.be.a('string').with.length.greaterThan(0);
      expect(down.body.checks.mysql.ok).to.equal(true);

      expect((await svc.call('loginByOpenid', { openid })).body.code).to.equal(0); // from MySQL
      expect((await svc.call('logout', { openid })).body.code).to.equal(-2);
      const after = await scrape(svc.opsUrl);
      const delta = (name: string, labels: Record<string, string> = {}) =>
        after.value(name, labels) - before.value(name, labels);
      expect(delta('user_service_cache_errors_total', { op: 'get' })).to.equal(1);
      expect(delta('user_service_cache_errors_total', { op: 'fill' })).to.equal(1);
      expect(delta('user_service_redis_errors_total', { op: 'fill' })).to.equal(1);
      expect(delta('user_service_redis_errors_total', { op: 'logout' })).to.equal(1);
      expect(delta('user_service_mysql_errors_total', { op: 'find' })).to.equal(0);
      // ioredis reports each failed reconnection attempt (the first comes ~100 ms after the loss).
      const connectionErrors = async () =>
        (await scrape(svc.opsUrl)).value('user_service_redis_errors_total', { op: 'connection' });
      const baseline = before.value('user_service_redis_errors_total', { op: 'connection' });
      await eventually(async () => (await connectionErrors()) > baseline);
    } finally {
      await redisServer.start();
    }
    await eventually(async () => (await fetch(`${svc.opsUrl}/readyz`)).status === 200);
  });
});
