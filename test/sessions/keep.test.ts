import { expect } from 'chai';
import type { RedisClient } from '../../src/redis/client';
import { SessionStore } from '../../src/sessions/store';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { testKeys, testRedis } from '../helpers/stores';

/**
 * A launch that presents a live session of its own user keeps it (issue 31): the cached
 * loginByOpenid (inside its one script), the miss (from MySQL) and a login of an existing
 * user alike. Anything else is a new session, as before.
 */
describe('a launch that presents its live session keeps it', function () {
  this.timeout(60_000);
  const keys = testKeys();
  let svc: TestService;
  let redis: RedisClient;
  let store: SessionStore;

  before(async () => {
    svc = await startService();
    redis = testRedis();
    const { ttlSeconds, idleSeconds, maxPerUser } = testConfig().sessions;
    store = new SessionStore(redis, keys, { ttlSeconds, idleSeconds, maxPerUser });
  });
  after(async () => {
    await svc.stop();
    redis.disconnect();
  });

  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
  const sessionCount = (openid: string) => redis.zcard(keys.userSessions(openid));

  async function registered(): Promise<{ openid: string; token: string; user_id: number; expires: number }> {
    const openid = newOpenid('keep');
    const res = await svc.call('login', loginBody(openid));
    expect(res.body.code, res.body.msg).to.equal(0);
    const { token, user_id, token_expires_at } = res.body.data;
    return { openid, token, user_id, expires: token_expires_at };
  }

  async function launch(openid: string, token?: string): Promise<{ token: string; token_expires_at: number }> {
    const res = await svc.call('loginByOpenid', { openid }, token ? bearer(token) : {});
    expect(res.body.code, res.body.msg).to.equal(0);
    return res.body.data;
  }

  it('ten launches with the token keep it: one session, slid each time, its expiry unchanged', async () => {
    const u = await registered();
    const key = keys.session(u.token);
    for (let i = 0; i < 10; i++) {
      // Shorten what is left so that a slide shows.
      await redis.pexpire(key, 5_000);
      const answer = await launch(u.openid, u.token);
      expect(answer.token).to.equal(u.token);
      expect(answer.token_expires_at).to.equal(u.expires);
      expect(await redis.pttl(key)).to.be.above(60_000);
      // The miss path (no cached profile) keeps it too, and caches the profile again.
      if (i === 5) await redis.del(keys.profile(u.openid));
    }
    expect(await sessionCount(u.openid)).to.equal(1);
    expect(await redis.hexists(keys.profile(u.openid), 'user')).to.equal(1);
    // The session still reads as the user's, for the sibling services.
    expect(await store.verify(u.token)).to.include({ openid: u.openid, user_id: u.user_id });
  });

  it("a login of an existing user keeps it too (Bearer or the body's token field)", async () => {
    const u = await registered();
    const res = await svc.call('login', loginBody(u.openid), bearer(u.token));
    expect(res.body.data.token).to.equal(u.token);
    const field = await svc.call('login', { ...loginBody(u.openid), token: u.token });
    expect(field.body.data.token).to.equal(u.token);
    expect(await sessionCount(u.openid)).to.equal(1);
  });

  it("another openid's token does not carry over, and is left as it was", async () => {
    const a = await registered();
    const b = await registered();
    const before = await redis.get(keys.session(b.token));
    for (const dropCache of [false, true]) {
      if (dropCache) await redis.del(keys.profile(a.openid));
      const answer = await launch(a.openid, b.token);
      expect(answer.token).to.not.equal(b.token);
      expect(answer.token).to.not.equal(a.token);
    }
    const login = await svc.call('login', loginBody(a.openid), bearer(b.token));
    expect(login.body.data.token).to.not.equal(b.token);
    expect(await sessionCount(a.openid)).to.equal(4);
    expect(await sessionCount(b.openid)).to.equal(1);
    expect(await redis.get(keys.session(b.token))).to.equal(before);
  });

  it("another openid's token minted into this user's slot does not carry over either", async () => {
    const a = await registered();
    // A session of another openid whose token lives in a's slot: only the script can tell.
    const other = newOpenid('keep');
    const draft = store.draft(a.openid);
    draft.tail = draft.tail.replace(a.openid, other);
    const planted = await store.issue({ user_id: a.user_id, openid: other }, draft);
    const answer = await launch(a.openid, planted.token);
    expect(answer.token).to.not.equal(planted.token);
  });

  it('an unknown, expired, ended or pre-registration token is a new session, as without one', async () => {
    const u = await registered();
    // A session of the openid without a user_id (as getOpenid issues before a registration).
    const anonymous = await store.issue({ user_id: null, openid: u.openid });
    // Past its absolute expiry, its key not yet gone.
    const past = Date.now() - (testConfig().sessions.ttlSeconds + 60) * 1000;
    const expired = await store.issue({ user_id: u.user_id, openid: u.openid }, store.draft(u.openid, past));
    await redis.pexpire(keys.session(expired.token), 60_000);
    const ended = await launch(u.openid, u.token);
    await redis.del(keys.session(ended.token));
    for (const token of ['A'.repeat(32), 'not a token', anonymous.token, expired.token, ended.token]) {
      const answer = await launch(u.openid, token);
      expect(answer.token, token).to.not.equal(token);
    }
    // A logout ends them all: the old token then mints a new one too.
    expect((await svc.call('logout', { openid: u.openid })).body.code).to.equal(0);
    const after = await launch(u.openid, u.token);
    expect(after.token).to.not.equal(u.token);
    expect(await sessionCount(u.openid)).to.equal(1);
  });

  it('a launch without a token still mints one each time', async () => {
    const u = await registered();
    const tokens = new Set([u.token]);
    for (let i = 0; i < 3; i++) tokens.add((await launch(u.openid)).token);
    expect(tokens.size).to.equal(4);
    expect(await sessionCount(u.openid)).to.equal(4);
  });
});
