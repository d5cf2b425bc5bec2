import { expect } from 'chai';
import { Agent, request } from 'node:http';
import { newOpenid } from '../helpers/env';
import { loginBody, post } from '../helpers/http';
import { freePort } from '../helpers/redis-server';
import { spawnService, type SpawnedService } from '../helpers/spawned-service';
import { eventually } from '../helpers/wait';
import { pgrep } from '../helpers/processes';

/** The pids of a process's node children (the workers of a WORKERS primary; not tsx's esbuild). */
const children = (pid: number): number[] => pgrep('-P', String(pid), '-x', 'node');

/**
 * One loginByOpenid on a connection of its own (no keep-alive), or on `agent`'s keep-alive
 * connection: resolves an error text or undefined.
 */
function freshConnectionCall(url: string, openid: string, agent?: Agent): Promise<string | undefined> {
  const body = JSON.stringify({ openid });
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  return new Promise((resolve) => {
    const req = request(
      `${url}/service/user/loginByOpenid`,
      { method: 'POST', agent: agent ?? false, headers: agent ? headers : { ...headers, connection: 'close' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          try {
            const { code } = JSON.parse(text) as { code: number };
            resolve(code === 0 ? undefined : `code ${code}`);
          } catch {
            resolve(`HTTP ${res.statusCode}: ${text.slice(0, 100)}`);
          }
        });
        res.on('error', (err) => resolve(err.message));
      },
    );
    req.on('error', (err) => resolve(`${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`));
    req.setTimeout(10_000, () => req.destroy(new Error('no answer within 10 s')));
    req.end(body);
  });
}

/**
 * `concurrency` clients, each sending one request after the other, every one on a new
 * connection, and `keepAlive` more, each on its keep-alive connection (a new one only once the
 * service closes it).
 */
function steadyLoad(url: string, openid: string, concurrency = 4, keepAlive = 0) {
  let running = true;
  const stats = { ok: 0, failures: [] as string[] };
  const agents = Array.from({ length: keepAlive }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
  const loops = [undefined, ...agents]
    .flatMap((agent) => (agent ? [agent] : Array(concurrency).fill(undefined)))
    .map(async (agent?: Agent) => {
      while (running) {
        const failure = await freshConnectionCall(url, openid, agent);
        if (failure) stats.failures.push(failure);
        else stats.ok += 1;
      }
    });
  return {
    stats,
    async stop() {
      running = false;
      await Promise.all(loops);
      agents.forEach((agent) => agent.destroy());
      return stats;
    },
  };
}

const count = (svc: SpawnedService, msg: string) => svc.logs.filter((l) => l.msg === msg).length;

describe('SIGHUP with WORKERS=2: rolling reload (the real process)', function () {
  this.timeout(180_000);
  let svc: SpawnedService | undefined;

  afterEach(() => {
    const pid = svc?.proc.pid;
    const workers = pid ? children(pid) : [];
    if (svc?.proc.exitCode === null) svc.proc.kill('SIGKILL');
    for (const worker of workers) process.kill(worker, 'SIGKILL');
    svc = undefined;
  });

  /** A WORKERS=2 service whose two workers both listen. */
  async function start(env: Record<string, string | number> = {}): Promise<SpawnedService> {
    const s = await spawnService({ WORKERS: 2, PORT: await freePort(), SHUTDOWN_GRACE_MS: 5000, ...env });
    await eventually(() => count(s, 'listening') === 2, 60_000, 50);
    return s;
  }

  it('replaces every worker twice under new and keep-alive connections; the primary stays, nothing fails or is reset', async () => {
    // The delay keeps the primary there when the echo below arrives (idle workers would
    // otherwise all drain within its 100 ms); a reload's old workers drain without it.
    svc = await start({ SHUTDOWN_DELAY_MS: 1000, SHUTDOWN_GRACE_MS: 10_000, HTTP_KEEP_ALIVE_TIMEOUT_MS: 5000 });
    const primary = svc.proc.pid!;
    const openid = newOpenid();
    expect((await post(svc.url, 'login', loginBody(openid))).body.code).to.equal(0);
    const before = children(primary);
    expect(before).to.have.length(2);

    // An old worker's keep-alive connections carry requests right up to its drain: closing one
    // while it is idle races the next request on it (ECONNRESET).
    const load = steadyLoad(svc.url, openid, 4, 16);
    await eventually(() => load.stats.ok >= 10, 30_000, 20);
    const atHup = load.stats.ok;
    for (const reloads of [1, 2]) {
      svc.proc.kill('SIGHUP');
      await eventually(() => count(svc!, 'reload complete') === reloads, 120_000, 50);
    }
    const atComplete = load.stats.ok;
    await eventually(() => load.stats.ok >= atComplete + 10, 30_000, 20);
    const { ok, failures } = await load.stop();

    expect(failures).to.deep.equal([]);
    expect(atComplete - atHup, 'answered during the reloads').to.be.greaterThan(0);
    expect(svc.proc.exitCode).to.equal(null);
    const after = children(primary);
    expect(after).to.have.length(2);
    expect(after.filter((pid) => before.includes(pid))).to.deep.equal([]);
    expect(count(svc, 'SIGHUP: reloading')).to.equal(2);
    expect(count(svc, 'reload: new worker ready')).to.equal(4);
    expect(count(svc, 'worker died; starting another')).to.equal(0);
    console.log(`      (${ok} requests, ${atComplete - atHup} of them during the two reloads)`);

    // The primary, like a single process, takes a repeated SIGTERM as the echo it is.
    svc.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 100));
    svc.proc.kill('SIGTERM');
    const { code } = await svc.exited;
    expect(code).to.equal(0);
    expect(count(svc, 'shutdown signal repeated: ignored (a group-delivered signal arrives twice)')).to.equal(1);
    expect(count(svc, 'all workers stopped')).to.equal(1);
  });

  it('keeps serving when a worker crashes during a reload: an old one (continues), a new one (aborts)', async () => {
    svc = await start({ SHUTDOWN_REPEAT_MS: 100 });
    const primary = svc.proc.pid!;
    const openid = newOpenid();
    expect((await post(svc.url, 'login', loginBody(openid))).body.code).to.equal(0);
    const first = children(primary);
    const starting = () => svc!.logs.filter((l) => l.msg === 'reload: starting a new worker');

    // An old worker dies while its replacement starts: the other old one serves meanwhile,
    // and the new one takes its place (no extra fork).
    svc.proc.kill('SIGHUP');
    await eventually(() => starting().length === 1, 30_000, 10);
    const crashed = starting()[0]!.replaces as number;
    process.kill(crashed, 'SIGKILL');
    // A connection node:cluster hands to a worker in the instant it dies is lost with it; the
    // service is up again once the primary has seen the death (reaped it).
    await eventually(() => !children(primary).includes(crashed), 10_000, 10);
    for (let i = 0; i < 5; i++) expect(await freshConnectionCall(svc.url, openid)).to.equal(undefined);
    await eventually(() => count(svc!, 'reload complete') === 1, 120_000, 50);
    const second = children(primary);
    expect(second).to.have.length(2);
    expect(second.filter((pid) => first.includes(pid))).to.deep.equal([]);
    expect(count(svc, 'worker died; starting another')).to.equal(0);

    // A new worker dies before it is ready: the reload stops there, the old workers stay.
    svc.proc.kill('SIGHUP');
    await eventually(() => starting().length === 3, 30_000, 10);
    const fresh = starting()[2]!.pid as number;
    process.kill(fresh, 'SIGKILL');
    await eventually(() => !children(primary).includes(fresh), 10_000, 10);
    await eventually(() => svc!.logs.some((l) => String(l.msg).startsWith('reload aborted')), 30_000, 20);
    for (let i = 0; i < 5; i++) expect(await freshConnectionCall(svc.url, openid)).to.equal(undefined);
    expect(children(primary).sort()).to.deep.equal([...second].sort());
    expect(count(svc, 'reload complete')).to.equal(1);
    expect(svc.proc.exitCode).to.equal(null);
  });
});
