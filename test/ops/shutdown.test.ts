import { expect } from 'chai';
import { Agent, createServer, request, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { drainer } from '../../src/shutdown';
import { FakeWechat } from '../helpers/fake-wechat';
import { post, userPart } from '../helpers/http';
import { spawnService, type SpawnedService } from '../helpers/spawned-service';
import { eventually } from '../helpers/wait';
import { accepts } from '../helpers/http';

describe('SIGTERM (the real process)', function () {
  this.timeout(60_000);
  let wechat: FakeWechat;
  let child: SpawnedService | undefined;

  before(async () => (wechat = await new FakeWechat().start()));
  afterEach(() => {
    if (child?.proc.exitCode === null) child.proc.kill('SIGKILL');
    child = undefined;
  });
  after(() => wechat.stop());

  it('refuses new connections, finishes the requests in flight, closes the stores and exits 0', async () => {
    const DELAY = 1500;
    child = await spawnService({
      WECHAT_API_BASE: wechat.url,
      WECHAT_TIMEOUT_MS: 5000,
      SHUTDOWN_GRACE_MS: 8000,
    });
    const codes = ['slow-1', 'slow-2', 'slow-3'];
    codes.forEach((code, i) =>
      wechat.on(code, { delayMs: DELAY, body: { openid: `o-sigterm-${i}`, session_key: 'sk' } }),
    );
    const seen = wechat.requests.length;
    // Separate connections: in flight over keep-alive sockets the server must close after.
    const answers = codes.map((js_code) => post(child!.url, 'getOpenid', { js_code }));
    await eventually(() => wechat.requests.length - seen === codes.length, 10_000, 20); // all three wait on WeChat

    const sentAt = performance.now();
    child.proc.kill('SIGTERM');
    await eventually(() => child!.logs.some((l) => String(l.msg).startsWith('shutting down')), 10_000, 20);
    expect(await accepts(child.url)).to.equal(false);

    const results = await Promise.all(answers);
    results.forEach((res, i) => {
      expect(res.body.code, codes[i]).to.equal(0);
      expect(userPart(res.body.data), codes[i]).to.deep.equal({ openid: `o-sigterm-${i}` });
    });
    const { code, at } = await child.exited;
    const ms = at - sentAt;
    expect(code).to.equal(0);
    expect(ms).to.be.below(8000);
    const shuttingDown = child.logs.find((l) => String(l.msg).startsWith('shutting down'));
    expect(shuttingDown?.inflight).to.equal(3);
    const done = child.logs.find((l) => l.msg === 'shutdown complete');
    expect(done?.clean).to.equal(true);
    console.log(`      (exit ${Math.round(ms)} ms after SIGTERM, with requests ${DELAY} ms from done at the signal)`);
  });

  it('cuts requests still running when the grace period ends, and exits 1', async () => {
    child = await spawnService({
      WECHAT_API_BASE: wechat.url,
      WECHAT_TIMEOUT_MS: 20_000,
      SHUTDOWN_GRACE_MS: 1000,
    });
    wechat.on('hang', { hang: true });
    const seen = wechat.requests.length;
    const stuck = fetch(`${child.url}/service/user/getOpenid`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ js_code: 'hang' }),
    }).then(
      () => 'answered',
      () => 'cut',
    );
    await eventually(() => wechat.requests.length > seen, 10_000, 20);
    const sentAt = performance.now();
    child.proc.kill('SIGTERM');
    const { code, at } = await child.exited;
    expect(code).to.equal(1);
    expect(at - sentAt).to.be.within(900, 5000);
    expect(await stuck).to.equal('cut');
    expect(child.logs.some((l) => String(l.msg).startsWith('grace period over'))).to.equal(true);
  });
});

describe('drainer (in process)', () => {
  let server: Server;
  let held: ServerResponse[];
  let port: number;
  let agents: Agent[];

  beforeEach(async () => {
    held = [];
    agents = [];
    // Every request waits until the test answers it.
    server = createServer((_req, res) => held.push(res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterEach(() => {
    agents.forEach((agent) => agent.destroy());
    server.closeAllConnections();
    server.close();
  });

  /** A POST on a keep-alive connection of its own (or `agent`'s), resolving with the answer's headers. */
  const send = (agent = new Agent({ keepAlive: true, maxSockets: 1 })) =>
    new Promise<IncomingHttpHeaders>((resolve, reject) => {
      agents.push(agent);
      const req = request({ port, host: '127.0.0.1', method: 'POST', path: '/', agent }, (res) => {
        res.resume();
        res.once('end', () => resolve(res.headers));
      });
      req.once('error', reject);
      req.end('{}');
    });
  const answer = (n: number) => held.splice(0, n).forEach((res) => res.end('ok'));

  it('keeps an exact count of the answers in flight as requests come and go', async () => {
    const d = drainer(server);
    const first = Array.from({ length: 10 }, send);
    await eventually(() => held.length === 10, 5000, 10);
    expect(d.inflight).to.equal(10);
    answer(4);
    await Promise.all(first.slice(0, 4));
    await eventually(() => d.inflight === 6, 5000, 10);
    // Four new requests arrive while six are still held (they take the freed slots).
    const second = Array.from({ length: 4 }, send);
    await eventually(() => held.length === 10, 5000, 10);
    expect(d.inflight).to.equal(10);
    answer(10);
    await Promise.all([...first, ...second]);
    await eventually(() => d.inflight === 0, 5000, 10);
  });

  it('answers what is in flight with Connection: close, then resolves once all is closed', async () => {
    const d = drainer(server);
    const idle = new Agent({ keepAlive: true, maxSockets: 1 });
    const before = [send(idle), send(), send()];
    await eventually(() => held.length === 3, 5000, 10);
    answer(1);
    expect((await before[0])!.connection).to.equal('keep-alive');
    const drained = d.drain(5000);
    answer(2);
    const headers = await Promise.all(before.slice(1));
    headers.forEach((h) => expect(h.connection).to.equal('close'));
    // The idle keep-alive connection was not closed under its client: its next request is
    // served, and answered with Connection: close.
    const next = send(idle);
    await eventually(() => held.length === 1, 5000, 10);
    answer(1);
    expect((await next).connection).to.equal('close');
    expect(await drained).to.equal(true);
    expect(d.inflight).to.equal(0);
  });

  it('leaves an idle keep-alive connection to end by itself: closed by its client, nothing is reset', async () => {
    const d = drainer(server);
    const idle = new Agent({ keepAlive: true, maxSockets: 1 });
    const first = send(idle);
    await eventually(() => held.length === 1, 5000, 10);
    answer(1);
    await first;
    const drained = d.drain(5000);
    let settled = false;
    void drained.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(settled, 'drained while a keep-alive connection was still open').to.equal(false);
    idle.destroy(); // the client lets its idle connection go
    expect(await drained).to.equal(true);
  });
});
