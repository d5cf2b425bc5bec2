import { expect } from 'chai';
import { connect } from 'node:net';
import { FakeWechat } from '../helpers/fake-wechat';
import { post, userPart } from '../helpers/http';
import { spawnService, type SpawnedService } from '../helpers/spawned-service';
import { eventually } from '../helpers/wait';

/** Whether a brand-new TCP connection to the service's port is accepted. */
function accepts(url: string): Promise<boolean> {
  const { port, hostname } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

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
