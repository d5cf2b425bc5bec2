import { expect } from 'chai';
import { createConnection } from 'mysql2/promise';
import { newOpenid, RUN_ID } from '../helpers/env';
import { galeraMissing, TestGaleraCluster } from '../helpers/galera-cluster';
import { loginBody } from '../helpers/http';
import { children } from '../helpers/processes';
import { freePort } from '../helpers/redis-server';
import { SENTINEL_NAME, TestRedisSentinels } from '../helpers/redis-sentinel';
import { spawnService, type SpawnedService } from '../helpers/spawned-service';
import { eventually } from '../helpers/wait';

const WRITERS = 8;
const READERS = 2;
/** The service must answer 0 again this soon after a kill (HAProxy's checks and Sentinel's included). */
const RECOVERY_MS = 5000;

interface Answer {
  route: 'update' | 'get' | 'login';
  user: number;
  sentAt: number;
  doneAt: number;
  status: number;
  code: number | null;
  /** update: the sequence number written; get: the one read; login: the openid registered. */
  seq: number;
  openid?: string;
}

/** POST with a deadline: a request that hangs is a failure too, never a hung test. */
async function call(
  baseUrl: string,
  route: string,
  body: object,
): Promise<{ status: number; code: number | null; data: any }> {
  try {
    const res = await fetch(`${baseUrl}/service/user/${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    try {
      const parsed = JSON.parse(text) as { code: number; data: unknown };
      return { status: res.status, code: parsed.code, data: parsed.data };
    } catch {
      return { status: res.status, code: null, data: text };
    }
  } catch (err) {
    return { status: 0, code: null, data: (err as Error).message };
  }
}

/**
 * What an operator must survive at 3 a.m.: the database node taking writes dies (SIGKILL), comes
 * back, the next one dies; then the Redis primary dies. All the while 8 writers update their own
 * user and 2 readers read them through the service, which is never restarted.
 */
describe('failover under load: Galera behind HAProxy, Redis through Sentinel (the real process)', function () {
  this.timeout(300_000);
  let galera: TestGaleraCluster | undefined;
  let sentinels: TestRedisSentinels | undefined;
  let svc: SpawnedService | undefined;
  const answers: Answer[] = [];
  const users: { openid: string; userId: number }[] = [];
  let running = false;
  let load: Promise<void> | undefined;

  before(async function () {
    const missing = galeraMissing();
    if (missing.length) throw new Error(`this test needs ${missing.join(', ')} (.ci/run installs them)`);
    [galera, sentinels] = await Promise.all([TestGaleraCluster.create(), TestRedisSentinels.start()]);
    svc = await spawnService({
      PORT: await freePort(),
      DATABASE_URL: `${galera.url}/user_service_failover_${RUN_ID}`,
      REDIS_SENTINELS: sentinels.sentinels,
      REDIS_SENTINEL_NAME: SENTINEL_NAME,
      REDIS_URL: 'redis://127.0.0.1:6379/0',
      RATE_LIMIT_IP: 0,
      RATE_LIMIT_OPENID: 0,
    });
    for (let i = 0; i < WRITERS; i++) {
      const openid = newOpenid('fail');
      const login = await call(svc.url, 'login', loginBody(openid, { nick_name: 'w-0' }));
      expect(login.code, JSON.stringify(login.data)).to.equal(0);
      users.push({ openid, userId: (login.data as { user_id: number }).user_id });
    }
    running = true;
    load = runLoad(svc.url);
  });

  after(async () => {
    running = false;
    await load;
    if (svc?.proc.exitCode === null) svc.proc.kill('SIGKILL');
    for (const pid of svc?.proc.pid ? children(svc.proc.pid) : []) process.kill(pid, 'SIGKILL');
    await galera?.destroy();
    await sentinels?.destroy();
  });

  async function runLoad(url: string): Promise<void> {
    const pause = () => new Promise((r) => setTimeout(r, 10));
    const writer = async (user: number) => {
      for (let seq = 1; running; seq++) {
        const sentAt = performance.now();
        const r = await call(url, 'update', { user_id: users[user]!.userId, update: { nick_name: `w-${seq}` } });
        answers.push({ route: 'update', user, sentAt, doneAt: performance.now(), status: r.status, code: r.code, seq });
        await pause();
      }
    };
    const reader = async (offset: number) => {
      for (let i = offset; running; i++) {
        const user = i % WRITERS;
        const sentAt = performance.now();
        const r = await call(url, 'get', { openid: users[user]!.openid });
        const nick = (r.data as { nick_name?: string } | null)?.nick_name ?? '';
        const seq = r.code === 0 ? Number(/^w-(\d+)$/.exec(nick)?.[1] ?? NaN) : NaN;
        answers.push({ route: 'get', user, sentAt, doneAt: performance.now(), status: r.status, code: r.code, seq });
        await pause();
      }
    };
    // Registrations, retried by the service where it is safe (openid is unique).
    const registrar = async () => {
      for (let n = 1; running; n++) {
        const openid = `${users[0]!.openid}_r${n}`;
        const sentAt = performance.now();
        const r = await call(url, 'login', loginBody(openid));
        answers.push({
          route: 'login',
          user: -1,
          sentAt,
          doneAt: performance.now(),
          status: r.status,
          code: r.code,
          seq: n,
          openid,
        });
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    await Promise.all([
      registrar(),
      ...Array.from({ length: WRITERS }, (_, i) => writer(i)),
      ...Array.from({ length: READERS }, (_, i) => reader(i * 3)),
    ]);
  }

  /** Waits while the load runs, then checks the answers since `from`: recovered in time, and 0 ever after. */
  async function survives(what: string, from: number): Promise<void> {
    const settledAt = from + RECOVERY_MS;
    await eventually(() => answers.some((a) => a.sentAt > settledAt + 1500 && a.route === 'update'), 30_000, 100);
    const since = answers.filter((a) => a.sentAt >= from || a.doneAt >= from);
    const failed = since.filter((a) => a.code !== 0);
    const lastFailure = Math.max(from, ...failed.map((a) => a.doneAt));
    const codes = [...new Set(failed.map((a) => `${a.route}:${a.status}:${a.code}`))];
    console.log(
      `      (${what}: ${since.length} answers, ${failed.length} not 0 [${codes.join(' ')}], answering 0 again ${Math.round(
        lastFailure - from,
      )} ms after)`,
    );
    expect(lastFailure - from, `${what}: last failure after the kill`).to.be.lessThan(RECOVERY_MS);
    // After recovery, nothing fails: no request was lent a dead pooled connection.
    expect(since.filter((a) => a.sentAt > lastFailure && a.code !== 0)).to.deep.equal([]);
    expect(since.some((a) => a.sentAt > lastFailure && a.code === 0 && a.route === 'update')).to.equal(true);
  }

  it('loses the node taking writes: answers 0 again within 5 s, no 5xx, and the next node keeps the writes', async () => {
    const first = await galera!.writer();
    const killedAt = performance.now();
    await galera!.node(first).kill();
    await survives(`${first} killed`, killedAt);
    expect(await galera!.writer()).to.not.equal(first);
  });

  it('takes the killed node back by IST while serving, without moving the writes back to it', async () => {
    const down = galera!.nodes.find((n) => !n.running)!;
    const from = performance.now();
    const { ist } = await down.restart(galera!.nodes.filter((n) => n !== down));
    expect(ist, 'rejoined by IST, not a full SST').to.equal(true);
    await survives(`${down.name} back`, from);
    // No fail-back: new connections do not go back to the node that rejoined. (They may move to
    // the third node: the IST donor is Donor/Desynced while it sends, and the check takes it out.)
    expect(await galera!.writer()).to.not.equal(down.name);
  });

  it('loses the next node taking writes as well', async () => {
    const second = await galera!.writer();
    const killedAt = performance.now();
    await galera!.node(second).kill();
    await survives(`${second} killed`, killedAt);
  });

  it('loses the Redis primary: follows the promoted replica without a restart', async () => {
    const killedAt = performance.now();
    const old = await sentinels!.killPrimary();
    const promotedAfter = await eventually(async () => (await sentinels!.primary()) !== old, 20_000, 100);
    await survives(`Redis primary killed, replica promoted after ${Math.round(promotedAfter)} ms`, killedAt);
  });

  it('lost no acknowledged update, served no read older than one, and never answered 5xx', async () => {
    running = false;
    await load;
    expect(answers.filter((a) => a.status >= 500 || a.status === 0)).to.deep.equal([]);
    // A read must show at least the last update acknowledged before it was sent.
    for (const read of answers.filter((a) => a.route === 'get' && a.code === 0)) {
      const acked = answers.filter(
        (a) => a.route === 'update' && a.user === read.user && a.code === 0 && a.doneAt < read.sentAt,
      );
      const floor = Math.max(0, ...acked.map((a) => a.seq));
      expect(read.seq, `user ${read.user} read at ${Math.round(read.sentAt)}`).to.be.at.least(floor);
    }
    // In the cluster: the value acknowledged last, or a later one whose answer was not 0 (its
    // COMMIT may have landed: the client was told to try again, nothing was acknowledged).
    const logins = answers.filter((a) => a.route === 'login');
    const conn = await createConnection(`${galera!.url}/user_service_failover_${RUN_ID}`);
    try {
      for (let user = 0; user < WRITERS; user++) {
        const [rows] = await conn.query('SELECT nick_name FROM users WHERE id = ?', [users[user]!.userId]);
        const stored = Number(/^w-(\d+)$/.exec((rows as { nick_name: string }[])[0]!.nick_name)?.[1]);
        const writes = answers.filter((a) => a.route === 'update' && a.user === user);
        const lastAcked = Math.max(0, ...writes.filter((a) => a.code === 0).map((a) => a.seq));
        const unacked = new Set(writes.filter((a) => a.code !== 0 && a.seq > lastAcked).map((a) => a.seq));
        expect(
          stored === lastAcked || unacked.has(stored),
          `user ${user}: stored w-${stored}, acknowledged last w-${lastAcked}`,
        ).to.equal(true);
      }
      // Every registration acknowledged made exactly one row; none made two.
      const [counts] = await conn.query('SELECT openid, COUNT(*) AS n FROM users WHERE openid LIKE ? GROUP BY openid', [
        `${users[0]!.openid}\\_r%`,
      ]);
      const rows = new Map((counts as { openid: string; n: number }[]).map((c) => [c.openid, Number(c.n)]));
      for (const login of logins) {
        if (login.code === 0) expect(rows.get(login.openid!), login.openid).to.equal(1);
        else expect(rows.get(login.openid!) ?? 0, login.openid).to.be.at.most(1);
      }
    } finally {
      await conn.end();
    }
    const acknowledged = answers.filter((a) => a.route === 'update' && a.code === 0).length;
    const reads = answers.filter((a) => a.route === 'get' && a.code === 0).length;
    const registered = logins.filter((a) => a.code === 0).length;
    console.log(
      `      (${acknowledged} updates acknowledged, ${reads} reads checked, ${registered} of ${logins.length} registrations answered 0)`,
    );
  });
});
