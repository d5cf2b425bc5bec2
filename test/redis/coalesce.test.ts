import { expect } from 'chai';
import type Redis from 'ioredis';
import { connectRedis, createRedis } from '../../src/redis/client';
import { TestRedisServer } from '../helpers/redis-server';
import { eventually } from '../helpers/wait';

/** How many times Redis has read from its clients' sockets since it started. */
async function readsProcessed(redis: Redis): Promise<number> {
  const stats = await redis.info('stats');
  return Number(/total_reads_processed:(\d+)/.exec(stats)![1]);
}

describe('Redis writes coalesced per event-loop turn (redis/coalesce.ts)', () => {
  let server: TestRedisServer;
  let redis: Redis;

  before(async () => {
    server = await TestRedisServer.start();
    redis = createRedis({ url: server.url, commandTimeoutMs: 1000, clusterNodes: [] }) as Redis;
    redis.on('error', () => {});
    expect(await connectRedis(redis)).to.equal(null);
    await redis.mset(Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, `v${i}`])));
  });
  after(async () => {
    redis?.disconnect();
    await server?.kill();
  });

  /** 50 GETs issued in one turn: what the socket held before the turn ended, and the replies. */
  async function fiftyInOneTurn() {
    const replies = Array.from({ length: 50 }, (_, i) => redis.get(`k${i}`));
    const held = { corked: redis.stream.writableCorked, bytes: redis.stream.writableLength };
    return { held, replies: await Promise.all(replies) };
  }

  it('holds the commands of one turn and sends them as one write that Redis reads at once', async () => {
    const before = await readsProcessed(redis);
    const { held, replies } = await fiftyInOneTurn();
    const after = await readsProcessed(redis);

    expect(held.corked).to.equal(1);
    expect(held.bytes).to.be.greaterThan(50 * '*2\r\n$3\r\nget\r\n$2\r\nk0\r\n'.length);
    expect(replies).to.deep.equal(Array.from({ length: 50 }, (_, i) => `v${i}`));
    // One read for the 50 GETs, one for the INFO that counts: not one per command.
    expect(after - before).to.be.at.most(3);
    expect(redis.stream.writableCorked).to.equal(0);
  });

  it('answers each command when its own reply arrives, not when the whole turn has', async () => {
    // Sent in one write: a GET, then a BLPOP that Redis answers only after 300 ms. Auto-pipelining
    // would resolve the GET with the BLPOP; here it resolves as soon as Redis has answered it.
    const started = Date.now();
    const get = redis.get('k1').then((v) => ({ v, ms: Date.now() - started }));
    const blpop = redis.blpop('never-filled', 0.3).then((v) => ({ v, ms: Date.now() - started }));
    const [got, popped] = await Promise.all([get, blpop]);
    expect(got.v).to.equal('v1');
    expect(popped.v).to.equal(null);
    expect(popped.ms).to.be.at.least(250);
    expect(got.ms).to.be.lessThan(150);
  });

  it('keeps coalescing on the new socket after a reconnect', async () => {
    const first = redis.stream;
    await server.kill();
    await server.start();
    await eventually(() => redis.status === 'ready' && redis.stream !== first);
    await redis.mset(Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, `v${i}`])));
    const { held, replies } = await fiftyInOneTurn();
    expect(held.corked).to.equal(1);
    expect(replies[49]).to.equal('v49');
  });
});
