import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Cluster } from 'ioredis';
import calculateSlot from 'cluster-key-slot';
import { clusterNodes, connectRedis, createRedis } from '../../src/redis/client';
import { keyLayout } from '../../src/redis/keys';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { TestRedisCluster } from '../helpers/redis-cluster';
import { startService } from '../helpers/service';

const ROOT = join(__dirname, '..', '..');
// The suites that exercise the cache and the sessions, run again against the cluster.
const SUITES = [
  'test/users/routes.test.ts',
  'test/users/cache.test.ts',
  'test/sessions/sessions.test.ts',
  'test/sessions/middleware.test.ts',
  'test/http/strict-mode.test.ts',
  'packages/sessions/test/reader.test.ts',
  'packages/sessions/test/koa.test.ts',
];

describe('Redis Cluster (3 masters owned by this test)', function () {
  this.timeout(180_000);
  let cluster: TestRedisCluster;

  before(async () => {
    cluster = await TestRedisCluster.start(3);
  });
  after(async () => {
    await cluster?.stop();
  });

  it("keeps all of one user's keys in one slot", () => {
    const keys = keyLayout('svc:');
    for (const openid of ['o1', 'oAbC-_123', 'o{weird}', newOpenid()]) {
      const slot = calculateSlot(keys.profile(openid));
      expect(calculateSlot(keys.wechatSession(openid))).to.equal(slot);
      expect(calculateSlot(keys.userSessions(openid))).to.equal(slot);
    }
  });

  it('serves users from the cluster, spreading their keys over the masters', async () => {
    const prefix = `${testConfig().redis.keyPrefix}cluster:`;
    const svc = await startService({ REDIS_CLUSTER_NODES: cluster.nodes, REDIS_KEY_PREFIX: prefix });
    const client = new Cluster(clusterNodes(cluster.nodes.split(',')));
    try {
      const openids = Array.from({ length: 30 }, () => newOpenid());
      let previous: string | undefined;
      for (const openid of openids) {
        const login = await svc.call('login', loginBody(openid, { nick_name: '集群' }));
        expect(login.body.code).to.equal(0);
        const again = await svc.call('loginByOpenid', { openid });
        expect(again.body.data.token).to.be.a('string');
        expect((await svc.call('session', { token: again.body.data.token })).body.data.openid).to.equal(openid);
        // A launch keeps its own token (one script on the user's master); another user's,
        // minted in another slot, is a new session rather than a cross-slot error.
        const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
        const kept = await svc.call('loginByOpenid', { openid }, bearer(again.body.data.token));
        expect(kept.body.data.token).to.equal(again.body.data.token);
        const foreign = await svc.call('loginByOpenid', { openid }, bearer(previous ?? kept.body.data.token));
        expect(foreign.body.code, foreign.body.msg).to.equal(0);
        if (previous) expect(foreign.body.data.token).to.not.equal(previous);
        previous = kept.body.data.token;
      }
      const keys = keyLayout(prefix);
      const holders = new Set<string>();
      for (const openid of openids) {
        expect(await client.hget(keys.profile(openid), 'user')).to.be.a('string');
        const node = client.slots[calculateSlot(keys.profile(openid))]?.[0];
        if (node) holders.add(node);
      }
      expect(holders.size).to.be.greaterThan(1);
    } finally {
      client.disconnect();
      await svc.stop();
    }
  });

  it("caps a user's sessions and ends them on logout, each script on its user's master", async () => {
    const prefix = `${testConfig().redis.keyPrefix}cluster-cap:`;
    const svc = await startService({ REDIS_CLUSTER_NODES: cluster.nodes, REDIS_KEY_PREFIX: prefix });
    const client = new Cluster(clusterNodes(cluster.nodes.split(',')));
    try {
      const keys = keyLayout(prefix);
      const openid = newOpenid();
      expect((await svc.call('login', loginBody(openid))).body.code).to.equal(0);
      const tokens: string[] = [];
      for (let i = 0; i < 60; i++) {
        tokens.push((await svc.call('loginByOpenid', { openid })).body.data.token);
        // Each in a millisecond of its own: sessions of one millisecond tie on score and are
        // ended in token order (sessions/store.ts), and this test names the 40 oldest.
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      const index = await client.zrange(keys.userSessions(openid), 0, -1);
      expect(index).to.have.length(20);
      expect(index).to.include(tokens.at(-1));
      expect(await client.exists(...tokens.slice(0, 40).map((t) => keys.session(t)))).to.equal(0);
      expect((await svc.call('session', { token: tokens[0] })).body.code).to.equal(-10);

      expect((await svc.call('logout', { openid })).body.code).to.equal(0);
      expect(await client.exists(keys.userSessions(openid), ...index.map((t) => keys.session(t)))).to.equal(0);
    } finally {
      client.disconnect();
      await svc.stop();
    }
  });

  it("coalesces each master's commands of one turn into one write", async () => {
    // The url only lends its password to the cluster's nodes: there is none here.
    const client = createRedis({
      url: 'redis://127.0.0.1:6379/0',
      commandTimeoutMs: 1000,
      clusterNodes: cluster.nodes.split(','),
    }) as Cluster;
    try {
      expect(await connectRedis(client)).to.equal(null);
      await Promise.all(client.nodes('master').map((node) => node.ping()));
      // A key in the slots of every master, then one command per key in a single turn.
      const keys = Array.from({ length: 30 }, (_, i) => `coalesce:${i}`);
      const replies = keys.map((k) => client.set(k, 'v'));
      const masters = new Set(keys.map((k) => client.slots[calculateSlot(k)]![0]));
      expect(masters.size).to.equal(3);
      const held = client.nodes('master').map((node) => node.stream.writableCorked);
      expect(held).to.deep.equal([1, 1, 1]);
      expect(await Promise.all(replies)).to.deep.equal(keys.map(() => 'OK'));
    } finally {
      client.disconnect();
    }
  });

  it('passes the cache and session suites against the cluster', () => {
    const run = spawnSync(
      process.execPath,
      [
        'node_modules/mocha/bin/mocha.js',
        '--no-config',
        '--require',
        'tsx/cjs',
        '--require',
        'test/setup.ts',
        '--timeout',
        '20000',
        '--exit',
        '--reporter',
        'dot',
        ...SUITES,
      ],
      {
        cwd: ROOT,
        env: { ...process.env, TEST_REDIS_CLUSTER_NODES: cluster.nodes },
        encoding: 'utf8',
        timeout: 170_000,
      },
    );
    const output = `${run.stdout}\n${run.stderr}`;
    expect(run.status, output).to.equal(0);
    const passing = Number(/(\d+) passing/.exec(run.stdout)?.[1] ?? 0);
    expect(passing, output).to.be.greaterThan(50);
    expect(output).to.not.match(/\d+ failing/);
  });
});
