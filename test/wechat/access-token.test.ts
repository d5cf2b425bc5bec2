import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { createLogger } from '../../src/logger';
import { RedisBreaker } from '../../src/redis/breaker';
import type { RedisClient } from '../../src/redis/client';
import { AccessTokenProvider, type AccessTokenTiming } from '../../src/wechat/access-token';
import { WechatApiError } from '../../src/wechat/http';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { loginBody, post } from '../helpers/http';
import { freePort } from '../helpers/redis-server';
import { spawnService, type SpawnedService } from '../helpers/spawned-service';
import { testKeys, testRedis } from '../helpers/stores';
import { eventually } from '../helpers/wait';
import { children } from '../helpers/processes';

const keys = testKeys();
const silent = createLogger(process.env.DBG ? 'debug' : 'silent');

describe('the shared WeChat access token (src/wechat/access-token.ts)', function () {
  this.timeout(20_000);
  let wechat: FakeWechat;
  const clients: RedisClient[] = [];

  before(async () => {
    wechat = await new FakeWechat().start();
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await wechat.stop();
  });

  /** A provider on its own Redis connection: what one service process has. */
  function process_(appid: string, timing: Partial<AccessTokenTiming> = {}): AccessTokenProvider {
    const redis = testRedis();
    clients.push(redis);
    const settings = { appid, secret: 's3cret', apiBase: wechat.url, timeoutMs: 3000 };
    return new AccessTokenProvider(settings, redis, keys, new RedisBreaker(1000), silent, timing);
  }
  const newAppid = () => `wx-at-${randomBytes(4).toString('hex')}`;

  it('cold: many callers in several processes fetch the token exactly once, and all get it', async () => {
    const appid = newAppid();
    const processes = [process_(appid), process_(appid), process_(appid)];
    const calls = wechat.tokenCalls.length;
    wechat.tokenDelayMs = 200;
    try {
      const tokens = await Promise.all(Array.from({ length: 150 }, (_, i) => processes[i % 3]!.get()));
      expect(new Set(tokens).size).to.equal(1);
      expect(tokens[0]).to.equal(wechat.issuedTokens.at(-1));
    } finally {
      wechat.tokenDelayMs = 0;
    }
    expect(wechat.tokenCalls.length - calls).to.equal(1);
    const redis = clients[0]!;
    expect(await redis.exists(keys.wechatAccessTokenLock(appid))).to.equal(0);
  });

  it('refreshes ahead of expiry while callers keep the current token', async () => {
    const appid = newAppid();
    const p = process_(appid);
    wechat.tokenTtlSeconds = 299; // under the 300 s refresh-ahead margin
    const calls = wechat.tokenCalls.length;
    let first: string;
    try {
      first = await p.get();
    } finally {
      wechat.tokenTtlSeconds = 7200;
    }
    expect(await p.get()).to.equal(first); // still served while the refresh runs
    await eventually(async () => (await clients.at(-1)!.get(keys.wechatAccessToken(appid))) !== first, 5000, 20);
    expect(wechat.tokenCalls.length - calls).to.equal(2);
    expect(await p.get()).to.equal(wechat.issuedTokens.at(-1));
  });

  it('drops a rejected token only if it is still the cached one, and retries the call once', async () => {
    const appid = newAppid();
    const p = process_(appid);
    const redis = clients.at(-1)!;
    const first = await p.get();
    // Another process has replaced the token meanwhile: this one's rejection must not drop it.
    const seen: string[] = [];
    const answer = await p.call(async (token) => {
      seen.push(token);
      if (seen.length === 1) {
        await redis.set(keys.wechatAccessToken(appid), 'REPLACED_TOKEN_0123456789', 'PX', 60_000);
        throw new WechatApiError(40001, 'invalid credential');
      }
      return 'ok';
    });
    expect(answer).to.equal('ok');
    expect(seen).to.deep.equal([first, 'REPLACED_TOKEN_0123456789']);
    expect(await redis.get(keys.wechatAccessToken(appid))).to.equal('REPLACED_TOKEN_0123456789');

    // A second rejection of the retried call is the caller's: no third attempt.
    let attempts = 0;
    let failure: unknown;
    try {
      await p.call(async () => {
        attempts++;
        throw new WechatApiError(42001, 'expired');
      });
    } catch (err) {
      failure = err;
    }
    expect(attempts).to.equal(2);
    expect(failure).to.be.instanceOf(WechatApiError);

    // Any other errcode is not about the token: not retried, token kept.
    const cached = await redis.get(keys.wechatAccessToken(appid));
    attempts = 0;
    try {
      await p.call(async () => {
        attempts++;
        throw new WechatApiError(40029, 'invalid code');
      });
    } catch {
      // expected
    }
    expect(attempts).to.equal(1);
    expect(await redis.get(keys.wechatAccessToken(appid))).to.equal(cached);
  });

  it('waits for another refresher a bounded time, then fails rather than hang', async () => {
    const appid = newAppid();
    const p = process_(appid, { waitMs: 400, pollMs: 20 });
    const redis = clients.at(-1)!;
    // A refresher that holds the lock and never stores a token.
    await redis.set(keys.wechatAccessTokenLock(appid), 'someone-else', 'PX', 5000);
    const calls = wechat.tokenCalls.length;
    const start = performance.now();
    let failure: Error | undefined;
    try {
      await p.get();
    } catch (err) {
      failure = err as Error;
    }
    expect(failure?.message).to.match(/no refresh finished in time/);
    expect(performance.now() - start).to.be.below(2000);
    expect(wechat.tokenCalls.length).to.equal(calls);
    // The lock is someone else's: left alone.
    expect(await redis.get(keys.wechatAccessTokenLock(appid))).to.equal('someone-else');
    // Once the holder is gone (its lock expired or released), a waiter takes over.
    await redis.del(keys.wechatAccessTokenLock(appid));
    expect(await p.get()).to.equal(wechat.issuedTokens.at(-1));
  });

  it('a failed refresh releases the lock, stores nothing, and keeps the secret out of the error', async () => {
    const appid = newAppid();
    const p = process_(appid);
    const redis = clients.at(-1)!;
    wechat.tokenRefusal = { errcode: 40125, errmsg: 'invalid appsecret s3cret' };
    let failure: Error | undefined;
    try {
      await p.get();
    } catch (err) {
      failure = err as Error;
    } finally {
      wechat.tokenRefusal = undefined;
    }
    expect(failure?.message).to.include('40125');
    expect(failure?.message).to.not.include('s3cret');
    expect(failure?.message).to.not.include(appid);
    expect(await redis.exists(keys.wechatAccessToken(appid), keys.wechatAccessTokenLock(appid))).to.equal(0);
  });

  it('remembers a refusal for every process: the others answer it at once, without asking WeChat', async () => {
    const appid = newAppid();
    const timing = { refusalBackoffMs: 800 };
    const [a, b, c] = [process_(appid, timing), process_(appid, timing), process_(appid, timing)];
    const calls = wechat.tokenCalls.length;
    wechat.tokenRefusal = { errcode: 40164, errmsg: 'invalid ip' };
    wechat.tokenDelayMs = 200; // b and c wait on a's lock meanwhile
    const codes: unknown[] = [];
    try {
      const first = a.get();
      await eventually(() => wechat.tokenCalls.length > calls, 5000, 5);
      const settled = await Promise.allSettled([first, b.get(), c.get(), b.get()]);
      for (const s of settled) codes.push(s.status === 'rejected' ? (s.reason as WechatApiError).errcode : 'token');
      expect(wechat.tokenCalls.length - calls).to.equal(1);
      expect(codes).to.deep.equal([40164, 40164, 40164, 40164]);
      // The refusal outlives nobody's memory for long: after the backoff, asked again.
      wechat.tokenRefusal = undefined;
      await eventually(async () => (await c.get().catch(() => '')) !== '', 5000, 100);
      expect(wechat.tokenCalls.length - calls).to.equal(2);
    } finally {
      wechat.tokenRefusal = undefined;
      wechat.tokenDelayMs = 0;
    }
  });
});

describe('bindPhone with WORKERS=2 (the real processes)', function () {
  this.timeout(90_000);
  let svc: SpawnedService | undefined;
  let wechat: FakeWechat;

  before(async () => {
    wechat = await new FakeWechat().start();
  });
  after(async () => {
    if (svc?.proc.exitCode === null) {
      const workers = children(svc.proc.pid!);
      svc.proc.kill('SIGKILL');
      for (const pid of workers) process.kill(pid, 'SIGKILL');
    }
    await wechat.stop();
  });

  it('200 concurrent calls on a cold cache fetch the token exactly once; no secret reaches the log', async () => {
    const appid = `wx-workers-${randomBytes(3).toString('hex')}`;
    svc = await spawnService({
      WORKERS: 2,
      PORT: await freePort(),
      WECHAT_API_BASE: wechat.url,
      WECHAT_APPID: appid,
      WECHAT_SECRET: 'workers-secret-xyz',
      WECHAT_TIMEOUT_MS: 10_000,
      REDIS_COMMAND_TIMEOUT_MS: 2000,
    });
    await eventually(() => svc!.logs.filter((l) => l.msg === 'listening').length === 2, 20_000, 50);
    const users = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const login = await post(svc!.url, 'login', loginBody(newOpenid('wk'), { phone: 'none' }));
        expect(login.body.code).to.equal(0);
        return login.body.data as { token: string; openid: string };
      }),
    );
    const calls = Array.from({ length: 200 }, (_, i) => {
      const code = `wk-code-${i}-${randomBytes(6).toString('hex')}`;
      const phone = `1380000${String(i).padStart(4, '0')}`;
      wechat.phoneCode(code, phone);
      return { code, phone, user: users[i % users.length]! };
    });
    // The refresh is slow: every caller of both workers arrives while it runs.
    wechat.tokenDelayMs = 300;
    const answers = await Promise.all(
      calls.map((c) =>
        post(svc!.url, 'bindPhone', { code: c.code }, { headers: { authorization: `Bearer ${c.user.token}` } }),
      ),
    );
    wechat.tokenDelayMs = 0;
    for (const a of answers) expect(a.body, a.body.msg).to.include({ code: 0 });
    expect(wechat.tokenCalls).to.have.length(1);
    expect(wechat.phoneCalls).to.have.length(200);
    const token = wechat.issuedTokens[0]!;
    for (const call of wechat.phoneCalls) expect(call.url.searchParams.get('access_token')).to.equal(token);
    // Each user ends with the phone of one of its own calls.
    for (const u of users) {
      const phone = (await post(svc.url, 'get', { openid: u.openid })).body.data.phone;
      expect(calls.filter((c) => c.user === u).map((c) => c.phone)).to.include(phone);
    }

    svc.proc.kill('SIGTERM');
    await svc.exited;
    const log = JSON.stringify(svc.logs) + svc.stderr.join('\n');
    expect(svc.logs.filter((l) => l.msg === 'wechat access token refreshed')).to.have.length(1);
    for (const secret of [token, 'workers-secret-xyz', ...calls.flatMap((c) => [c.code, c.phone])]) {
      expect(log).to.not.include(secret);
    }
  });
});
