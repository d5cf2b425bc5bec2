import { expect } from 'chai';
import { Cluster } from 'ioredis';
import keySlot from 'cluster-key-slot';
import { ConfigError } from '../../src/config';
import type { RedisClient } from '../../src/redis/client';
import { SessionStore } from '../../src/sessions/store';
import { newToken } from '../../src/sessions/token';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { testKeys, testRedis } from '../helpers/stores';

const CAP = 20;
const settings = { ttlSeconds: 3600, idleSeconds: 3600, maxPerUser: CAP };

/**
 * The commands `redis` sends from now on, but the connection's own (INFO of the ready check):
 * one EVALSHA per script run, and its EVAL fallback if the script was not loaded.
 */
function countCommands(redis: RedisClient): { names: string[]; stop(): void } {
  const names: string[] = [];
  const target = redis as unknown as { sendCommand(c: { name: string }, ...rest: unknown[]): unknown };
  const original = target.sendCommand;
  target.sendCommand = function (this: unknown, command, ...rest) {
    if (command.name !== 'info') names.push(command.name);
    return original.call(this, command, ...rest);
  };
  return { names, stop: () => (target.sendCommand = original) };
}

/** Every session key of the run that holds a session of `openid` (SCAN on every master). */
async function liveSessionsOf(redis: RedisClient, openid: string): Promise<string[]> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  const found: string[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', testKeys().session('*'), 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        const raw = await node.get(key).catch(() => null);
        if (raw && JSON.parse(raw).openid === openid) found.push(key);
      }
    } while (cursor !== '0');
  }
  return found.sort();
}

describe('sessions per user are capped (SESSION_MAX_PER_USER)', function () {
  this.timeout(120_000);
  const keys = testKeys();
  let redis: RedisClient;
  let store: SessionStore;

  before(async () => {
    redis = testRedis();
    store = new SessionStore(redis, keys, settings);
    await redis.ping();
  });
  after(() => redis.disconnect());

  const alive = async (token: string) => (await store.verify(token)) !== null;

  it('is 20 by default, and refuses 0 or more than 1000', () => {
    expect(testConfig().sessions.maxPerUser).to.equal(20);
    expect(testConfig({ SESSION_MAX_PER_USER: 1000 }).sessions.maxPerUser).to.equal(1000);
    for (const bad of [0, 1001, -1, 'x'])
      expect(() => testConfig({ SESSION_MAX_PER_USER: bad })).to.throw(ConfigError, /SESSION_MAX_PER_USER/);
  });

  it('ends the oldest session when one more is issued, in the script that stores it', async () => {
    const openid = newOpenid();
    const start = Date.now();
    const tokens: string[] = [];
    for (let i = 0; i < CAP + 5; i++) {
      const d = store.draft(openid, start + i);
      const counted = countCommands(redis);
      await store.issue({ user_id: 7, openid }, d);
      counted.stop();
      expect(counted.names).to.have.length(1);
      tokens.push(d.token);
    }
    const index = await redis.zrange(keys.userSessions(openid), 0, -1);
    expect(index).to.deep.equal(tokens.slice(5));
    for (const [i, t] of tokens.entries()) expect(await alive(t), `session ${i}`).to.equal(i >= 5);
    expect(await liveSessionsOf(redis, openid)).to.deep.equal(
      tokens
        .slice(5)
        .map((t) => keys.session(t))
        .sort(),
    );
  });

  it('never ends the session it issues, even among sessions of the same millisecond', async () => {
    const openid = newOpenid();
    const now = Date.now();
    for (let i = 0; i < 3 * CAP; i++) {
      const d = store.draft(openid, now);
      await store.issue({ user_id: 7, openid }, d);
      expect(await alive(d.token), `session ${i}`).to.equal(true);
      expect(await redis.zcard(keys.userSessions(openid))).to.equal(Math.min(i + 1, CAP));
    }
    expect(await liveSessionsOf(redis, openid)).to.have.length(CAP);
  });

  it('ends a capped index in one command, whatever the cap', async () => {
    for (const cap of [CAP, 1000]) {
      const capped = new SessionStore(redis, keys, { ...settings, maxPerUser: cap });
      const openid = newOpenid();
      const tokens: string[] = [];
      for (let i = 0; i < cap + 10; i++) tokens.push((await capped.issue({ user_id: 1, openid })).token);
      expect(await redis.zcard(keys.userSessions(openid))).to.equal(cap);

      const counted = countCommands(redis);
      const ended = await capped.revokeAll(openid);
      counted.stop();
      expect(ended).to.equal(cap);
      expect(counted.names, `cap ${cap}`).to.have.length(1);
      expect(counted.names[0]).to.match(/^eval/);
      expect(await redis.exists(keys.userSessions(openid))).to.equal(0);
      expect(await liveSessionsOf(redis, openid)).to.deep.equal([]);
    }
  });

  it('ends an index grown before the cap existed in bounded batches', async () => {
    const openid = newOpenid();
    const index = keys.userSessions(openid);
    const expiry = Date.now() + 3_600_000;
    const tokens = Array.from({ length: 2500 }, () => store.draft(openid).token);
    // As an older version left it: every token indexed, every session stored.
    for (let i = 0; i < tokens.length; i += 500) {
      const batch = tokens.slice(i, i + 500);
      await redis.zadd(index, ...batch.flatMap((t) => [expiry, t]));
      await Promise.all(batch.map((t) => redis.set(keys.session(t), JSON.stringify({ v: 1, user_id: 1, openid }))));
    }
    const counted = countCommands(redis);
    expect(await store.revokeAll(openid)).to.equal(2500);
    counted.stop();
    // Three scripts of at most 1000 sessions each.
    expect(counted.names).to.have.length(3);
    expect(await redis.exists(index)).to.equal(0);
    expect(await liveSessionsOf(redis, openid)).to.deep.equal([]);
  });

  it('ends sessions whose tokens live in another slot (minted before tokens shared it)', async () => {
    const openid = newOpenid();
    const index = keys.userSessions(openid);
    // Half the key space away: in a cluster of three masters, another master's slot.
    const foreignSlot = (keySlot(index) + 8192) % 16384;
    const old = Array.from({ length: CAP }, () => newToken(foreignSlot));
    for (const [i, t] of old.entries()) {
      await redis.zadd(index, Date.now() + 60_000 + i * 1000, t);
      await redis.set(keys.session(t), JSON.stringify({ v: 1, user_id: 1, openid }), 'PX', 600_000);
    }
    // The index is at its cap: issuing one more drops the oldest from it, and ends its session
    // where the script can reach it (always on one node; in a cluster, only in its own node).
    const fresh = await store.issue({ user_id: 1, openid });
    expect(await alive(fresh.token)).to.equal(true);
    expect(await redis.zrange(index, 0, -1)).to.deep.equal([...old.slice(1), fresh.token]);
    const dropped = old[0]!;
    const reachable = !(redis instanceof Cluster) || redis.slots[foreignSlot]?.[0] === redis.slots[keySlot(index)]?.[0];

    // Logout ends every indexed session, the foreign ones one by one.
    expect(await store.revokeAll(openid)).to.equal(CAP);
    const left = await liveSessionsOf(redis, openid);
    expect(left).to.deep.equal(reachable ? [] : [keys.session(dropped)]);
    // What was left ends at its own TTL.
    if (left.length) expect(await redis.pttl(left[0]!)).to.be.within(1, 600_000);
  });

  describe('through the service', () => {
    let svc: TestService;
    before(async () => {
      // Every login must get its session: a busy test machine must not turn one into a timeout.
      svc = await startService({ REDIS_COMMAND_TIMEOUT_MS: 5000 });
    });
    after(async () => {
      await svc.stop();
    });

    it('10,000 logins of one openid leave 20 live sessions; logout ends them all', async () => {
      const openid = newOpenid();
      const tokens: string[] = [(await svc.call('login', loginBody(openid))).body.data.token];
      const LOGINS = 10_000;
      const PARALLEL = 10;
      let next = 1;
      await Promise.all(
        Array.from({ length: PARALLEL }, async () => {
          while (next < LOGINS) {
            next++;
            const res = await svc.call('loginByOpenid', { openid });
            expect(res.body.code).to.equal(0);
            tokens.push(res.body.data.token);
          }
        }),
      );
      expect(new Set(tokens).size).to.equal(LOGINS);

      const index = await redis.zrange(keys.userSessions(openid), 0, -1);
      expect(index).to.have.length(CAP);
      expect(await liveSessionsOf(redis, openid)).to.deep.equal(index.map((t) => keys.session(t)).sort());
      // The last one issued is among them; tokens beyond the cap are refused.
      expect(index).to.include(tokens.at(-1));
      for (const t of index) expect((await svc.call('session', { token: t })).body.code).to.equal(0);
      const ended = tokens.filter((t) => !index.includes(t));
      for (const t of [...ended.slice(0, 50), ...ended.slice(-50)]) {
        expect((await svc.call('session', { token: t })).body.code).to.equal(-10);
      }

      expect((await svc.call('logout', { openid })).body.code).to.equal(0);
      for (const t of index) expect((await svc.call('session', { token: t })).body.code).to.equal(-10);
      expect(await liveSessionsOf(redis, openid)).to.deep.equal([]);
      expect(await redis.exists(keys.userSessions(openid))).to.equal(0);
    });
  });
});
