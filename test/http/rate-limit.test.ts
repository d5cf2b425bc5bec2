import { expect } from 'chai';
import type { RedisClient as Redis } from '../../src/redis/client';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { testRedis } from '../helpers/stores';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let prefixes = 0;

/** Each service here gets a prefix of its own, so the per-IP counters of tests do not mix. */
async function limited(limits: Record<string, number>, prefix?: string): Promise<TestService> {
  return startService({
    REDIS_KEY_PREFIX: prefix ?? `${testConfig().redis.keyPrefix}rl${++prefixes}:`,
    RATE_LIMIT_IP: 0,
    RATE_LIMIT_OPENID: 0,
    RATE_LIMIT_WINDOW_SECONDS: 2,
    ...limits,
  });
}

describe('rate limits', function () {
  this.timeout(20_000);
  const started: TestService[] = [];
  let redis: Redis;
  before(() => (redis = testRedis()));
  after(async () => {
    redis.disconnect();
    for (const s of started) await s.stop();
  });
  const track = (s: TestService) => (started.push(s), s);

  it('limits calls per openid with HTTP 429, leaves other openids alone, and resets after the window', async () => {
    const svc = track(await limited({ RATE_LIMIT_OPENID: 3 }));
    const openid = newOpenid();
    const other = newOpenid();
    for (let i = 0; i < 3; i++) expect((await svc.call('loginByOpenid', { openid })).body.code).to.equal(-2);
    const over = await svc.call('get', { openid });
    expect(over.status).to.equal(429);
    expect(over.body.code).to.equal(429);
    expect(Number(over.headers.get('retry-after'))).to.be.within(1, 2);
    expect((await svc.call('loginByOpenid', { openid: other })).body.code).to.equal(-2);
    // update and logout are not rate limited
    expect((await svc.call('logout', { openid })).body.code).to.equal(0);

    await sleep(2100);
    expect((await svc.call('loginByOpenid', { openid })).body.code).to.equal(-2);
  });

  it('limits calls per client IP across the limited routes', async () => {
    const svc = track(await limited({ RATE_LIMIT_IP: 4 }));
    const codes: number[] = [];
    codes.push((await svc.call('get', { openid: newOpenid() })).status);
    codes.push((await svc.call('loginByOpenid', { openid: newOpenid() })).status);
    codes.push((await svc.call('getOpenid', { js_code: 'abc' })).status);
    codes.push((await svc.call('get', { openid: newOpenid() })).status);
    codes.push((await svc.call('login', loginBody(newOpenid()))).status);
    expect(codes).to.deep.equal([200, 200, 200, 200, 429]);
  });

  it('shares one budget between service processes on one Redis', async () => {
    const prefix = `${testConfig().redis.keyPrefix}rl-shared:`;
    const a = track(await limited({ RATE_LIMIT_OPENID: 4 }, prefix));
    const b = track(await limited({ RATE_LIMIT_OPENID: 4 }, prefix));
    const openid = newOpenid();
    const statuses = [];
    for (const svc of [a, b, a, b, a, b]) statuses.push((await svc.call('get', { openid })).status);
    expect(statuses).to.deep.equal([200, 200, 200, 200, 429, 429]);
    const keys = await redis.keys(`${prefix}ratelimit:openid:*`);
    expect(keys).to.deep.equal([`${prefix}ratelimit:openid:${openid}`]);
  });
});
