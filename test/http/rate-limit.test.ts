import { expect } from 'chai';
import { request } from 'node:http';
import type { RedisClient as Redis } from '../../src/redis/client';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';
import { testRedis } from '../helpers/stores';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let prefixes = 0;

/** Each service here gets a prefix of its own, so the per-IP counters of tests do not mix. */
async function limited(
  limits: Record<string, number | string>,
  prefix?: string,
  logTo?: LogCapture,
): Promise<TestService> {
  return startService(
    {
      REDIS_KEY_PREFIX: prefix ?? `${testConfig().redis.keyPrefix}rl${++prefixes}:`,
      RATE_LIMIT_IP: 0,
      RATE_LIMIT_OPENID: 0,
      RATE_LIMIT_WINDOW_SECONDS: 2,
      ...limits,
    },
    logTo,
  );
}

/** For tests that need no reset: a window no slow machine can straddle. */
const MINUTE = { RATE_LIMIT_WINDOW_SECONDS: 60 };

/** A call as it arrives from the proxy in front: X-Forwarded-For already has the proxy's entry. */
const via = (forwardedFor: string) => ({ headers: { 'X-Forwarded-For': forwardedFor } });

/** One POST with X-Forwarded-For sent as several header lines (fetch would merge them). */
function postLines(svc: TestService, route: string, body: unknown, lines: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${svc.url}/service/user/${route}`,
      { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': lines } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
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
    expect((await svc.call('logout', { openid })).status).to.equal(429);

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
    expect(keys).to.deep.equal([`${prefix}ratelimit:openid:127.0.0.1|${openid}`]);
  });

  it('limits update, logout and session too, with HTTP 429 and Retry-After', async () => {
    const svc = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 4 }));
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await svc.call('session', { token: `t${i}` })).status);
    const over = await svc.call('session', { token: 'x' });
    expect(statuses).to.deep.equal([200, 200, 200, 200]);
    expect(over.status).to.equal(429);
    expect(over.body.code).to.equal(429);
    expect(Number(over.headers.get('retry-after'))).to.be.within(1, 60);
    expect((await svc.call('logout', { openid: newOpenid() })).status).to.equal(429);
    expect((await svc.call('update', { user_id: 1, update: { gender: 1 } })).status).to.equal(429);
  });

  it('counts an update twice against the client, and once per user_id and client', async () => {
    const svc = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 6, RATE_LIMIT_OPENID: 2 }));
    const user = (await svc.call('login', loginBody(newOpenid()))).body.data.user_id as number;
    const patch = { update: { nick_name: 'n2' } };
    // Client budget 6: the login took 1, so two updates (2 each) fit and a third does not.
    const a = await svc.call('update', { user_id: user, ...patch });
    const b = await svc.call('update', { user_id: user, ...patch });
    expect([a.body.code, b.body.code]).to.deep.equal([0, 0]);
    const c = await svc.call('update', { user_id: user + 1_000_000, ...patch });
    expect(c.status).to.equal(429);

    // Per user_id and client: a third update of one user is refused even with client budget left.
    const svc2 = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 100, RATE_LIMIT_OPENID: 2 }));
    const codes: number[] = [];
    for (let i = 0; i < 3; i++) codes.push((await svc2.call('update', { user_id: user, ...patch })).status);
    expect(codes).to.deep.equal([200, 200, 429]);
    expect((await svc2.call('update', { user_id: user + 1, ...patch })).status).to.equal(200);
  });

  it('enumerating user_ids through update is held to half the client budget per window', async () => {
    const svc = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 40 }));
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) => svc.call('update', { user_id: 2_000_000 + i, update: { gender: 1 } })),
    );
    const passed = answers.filter((r) => r.status === 200);
    expect(passed).to.have.length(20);
    for (const r of passed) expect(r.body.code).to.equal(-2);
  });

  describe('behind a proxy (TRUST_PROXY)', () => {
    it('cannot be evaded by changing the left, client-written, entries of X-Forwarded-For', async () => {
      const svc = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 3, TRUST_PROXY: 1 }));
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) {
        const claims = `10.9.${i}.1, 2001:db8::${i}, junk${i}`;
        statuses.push((await svc.call('get', { openid: newOpenid() }, via(`${claims}, 203.0.113.7`))).status);
      }
      expect(statuses).to.deep.equal([200, 200, 200, 429, 429]);
      // Another client behind the same proxy has its own budget.
      expect((await svc.call('get', { openid: newOpenid() }, via('203.0.113.8'))).status).to.equal(200);
    });

    it('ignores X-Forwarded-For entirely when TRUST_PROXY is off', async () => {
      const logs = new LogCapture();
      const svc = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 2, LOG_LEVEL: 'info' }, undefined, logs));
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        statuses.push((await svc.call('get', { openid: newOpenid() }, via(`198.51.100.${i}`))).status);
      }
      expect(statuses).to.deep.equal([200, 200, 429]);
      const lines = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.find((l) => l.msg === 'client IP rule')).to.include({ trustProxy: false });
      // Told once, not per request.
      expect(lines.filter((l) => String(l.msg).includes('TRUST_PROXY is off'))).to.have.length(1);
      expect(lines.filter((l) => l.msg === 'request').map((l) => l.ip)).to.deep.equal([
        '127.0.0.1',
        '127.0.0.1',
        '127.0.0.1',
      ]);
    });

    it('cannot frame another address by naming it', async () => {
      const svc = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 2, TRUST_PROXY: 1 }));
      for (let i = 0; i < 4; i++) await svc.call('get', { openid: newOpenid() }, via('198.51.100.1, 203.0.113.66'));
      expect((await svc.call('get', { openid: newOpenid() }, via('203.0.113.66'))).status).to.equal(429);
      expect((await svc.call('get', { openid: newOpenid() }, via('198.51.100.1'))).status).to.equal(200);
    });

    it('takes the entry N hops from the right with TRUST_PROXY=N, across several header lines', async () => {
      const logs = new LogCapture();
      const svc = track(
        await limited({ ...MINUTE, RATE_LIMIT_IP: 2, TRUST_PROXY: 2, LOG_LEVEL: 'info' }, undefined, logs),
      );
      const body = { openid: newOpenid() };
      // The client's claim, then the outer proxy's line, then the inner proxy's: Node joins them.
      const statuses = [
        await postLines(svc, 'get', body, ['6.6.6.1', '203.0.113.9, 10.0.0.2']),
        await postLines(svc, 'get', body, ['6.6.6.2', '203.0.113.9', '10.0.0.3']),
        await postLines(svc, 'get', body, ['203.0.113.9, 10.0.0.2']),
        await postLines(svc, 'get', body, ['203.0.113.10', '10.0.0.2']),
      ];
      expect(statuses).to.deep.equal([200, 200, 429, 200]);
      const rule = logs.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'client IP rule');
      expect(rule).to.include({ trustProxy: 2 });
      expect(rule.rule).to.include('2nd entry from the right');
      const ips = logs.lines
        .map((l) => JSON.parse(l))
        .filter((l) => l.msg === 'request')
        .map((l) => l.ip);
      expect(ips).to.deep.equal(['203.0.113.9', '203.0.113.9', '203.0.113.9', '203.0.113.10']);
    });

    it('caps an overlong header: no big Redis key, no big log field', async () => {
      const logs = new LogCapture();
      const prefix = `${testConfig().redis.keyPrefix}rl-long:`;
      const svc = track(
        await limited(
          { ...MINUTE, RATE_LIMIT_IP: 3, RATE_LIMIT_OPENID: 3, TRUST_PROXY: 1, LOG_LEVEL: 'info' },
          prefix,
          logs,
        ),
      );
      const openid = newOpenid();
      const junk = (i: number) => `${String(i).repeat(6000)}`.slice(0, 6000);
      const statuses: number[] = [];
      for (let i = 1; i <= 4; i++) {
        const res = await svc.call('get', { openid }, via(`${junk(i)}, 203.0.113.20`));
        statuses.push(res.status);
      }
      // Also the client entry itself overlong, and many entries.
      const many = Array.from({ length: 1000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`).join(', ');
      expect(many.length).to.be.above(10_000);
      statuses.push((await svc.call('get', { openid: newOpenid() }, via(`${many}, 203.0.113.20`))).status);
      const unattributed = newOpenid();
      statuses.push((await svc.call('get', { openid: unattributed }, via(junk(7)))).status);
      expect(statuses).to.deep.equal([200, 200, 200, 429, 429, 200]);
      // The refused calls made no key (the client budget is checked first); no key holds the header.
      const keys = (await redis.keys(`${prefix}ratelimit:*`)).map((k) => k.slice(prefix.length)).sort();
      expect(keys).to.deep.equal([
        `ratelimit:ip:203.0.113.20`,
        `ratelimit:ip:unattributed`,
        `ratelimit:openid:203.0.113.20|${openid}`,
        `ratelimit:openid:unattributed|${unattributed}`,
      ]);
      for (const key of keys) expect(key.length, key).to.be.below(120);
      for (const line of logs.lines) expect(line.length, line.slice(0, 100)).to.be.below(1000);
    });

    it('puts requests without an address at the client position into one budget of their own', async () => {
      const logs = new LogCapture();
      const svc = track(
        await limited({ ...MINUTE, RATE_LIMIT_IP: 2, TRUST_PROXY: 2, LOG_LEVEL: 'info' }, undefined, logs),
      );
      const statuses: number[] = [];
      for (const header of ['unknown, 10.0.0.2', 'x, 10.0.0.2', '203.0.113.30']) {
        statuses.push((await svc.call('get', { openid: newOpenid() }, via(header))).status);
      }
      expect(statuses).to.deep.equal([200, 200, 429]);
      // A client with an address is unaffected.
      expect((await svc.call('get', { openid: newOpenid() }, via('203.0.113.31, 10.0.0.2'))).status).to.equal(200);
      const warnings = logs.lines.map((l) => JSON.parse(l)).filter((l) => l.level === 40);
      expect(warnings.map((w) => w.msg).join('\n')).to.include('fewer entries than TRUST_PROXY');
      expect(warnings).to.have.length(2); // one per kind: no valid address, too few entries
    });

    it('gives one IPv6 /64 one budget', async () => {
      const prefix = `${testConfig().redis.keyPrefix}rl-v6:`;
      const svc = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 3, TRUST_PROXY: 'true' }, prefix));
      const statuses: number[] = [];
      for (const ip of ['2001:db8:1:2::a', '2001:DB8:1:2:ffff::b', '[2001:db8:1:2::c]:4431', '2001:db8:1:2:0:0:0:d']) {
        statuses.push((await svc.call('get', { openid: newOpenid() }, via(ip))).status);
      }
      expect(statuses).to.deep.equal([200, 200, 200, 429]);
      expect((await svc.call('get', { openid: newOpenid() }, via('2001:db8:1:3::a'))).status).to.equal(200);
      // An IPv4-mapped address is its IPv4 client, not one ::/64 shared by all of IPv4.
      expect((await svc.call('get', { openid: newOpenid() }, via('::ffff:198.51.100.40'))).status).to.equal(200);
      expect((await svc.call('get', { openid: newOpenid() }, via('::ffff:198.51.100.41'))).status).to.equal(200);
      const keys = (await redis.keys(`${prefix}ratelimit:ip:*`)).map((k) => k.slice(prefix.length)).sort();
      expect(keys).to.deep.equal([
        'ratelimit:ip:198.51.100.40',
        'ratelimit:ip:198.51.100.41',
        'ratelimit:ip:2001:db8:1:2::/64',
        'ratelimit:ip:2001:db8:1:3::/64',
      ]);
    });

    it("does not let strangers on other addresses lock an openid's owner out", async () => {
      const svc = track(await limited({ ...MINUTE, RATE_LIMIT_IP: 50, RATE_LIMIT_OPENID: 3, TRUST_PROXY: 1 }));
      const openid = newOpenid();
      const owner = via('203.0.113.50');
      expect((await svc.call('login', loginBody(openid), owner)).body.code).to.equal(0);
      // Strangers from twenty addresses each spend their whole budget (and more) on the openid.
      const attacks = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          Promise.all([
            svc.call('get', { openid }, via(`198.51.100.${i}`)),
            svc.call('loginByOpenid', { openid }, via(`198.51.100.${i}`)),
            svc.call('get', { openid }, via(`198.51.100.${i}`)),
            svc.call('logout', { openid }, via(`198.51.100.${i}`)),
          ]),
        ),
      );
      const refused = attacks.flat().filter((r) => r.status === 429).length;
      expect(refused).to.equal(20); // each stranger's 4th call
      const mine = await svc.call('loginByOpenid', { openid }, owner);
      expect(mine.status).to.equal(200);
      expect(mine.body.code).to.equal(0);
      // The owner's own budget is the only one that can run out for the owner.
      await svc.call('get', { openid }, owner);
      expect((await svc.call('get', { openid }, owner)).status).to.equal(429);
    });
  });
});
