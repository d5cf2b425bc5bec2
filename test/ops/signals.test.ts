import { expect } from 'chai';
import pkg from '../../package.json';
import { SignalLadder } from '../../src/signals';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { loginBody, post, userPart } from '../helpers/http';
import { spawnService, type SpawnedService } from '../helpers/spawned-service';
import { eventually } from '../helpers/wait';
import { pgrep } from '../helpers/processes';
import { accepts } from '../helpers/http';

/** The pids in a process group (empty once all of them exited). */
const group = (pgid: number): number[] => pgrep('-g', String(pgid));

const count = (svc: SpawnedService, msg: string) => svc.logs.filter((l) => l.msg === msg).length;

describe('shutdown signals', () => {
  describe('SignalLadder', () => {
    const ladder = () => new SignalLadder({ repeatMs: 2000, delayMs: 5000 });

    it('takes the same signal again within SHUTDOWN_REPEAT_MS as an echo, and later as "now"', () => {
      const l = new SignalLadder({ repeatMs: 2000, delayMs: 0 });
      expect(l.decide('SIGTERM', 0)).to.equal('stop');
      expect(l.decide('SIGTERM', 100)).to.equal('repeat');
      expect(l.decide('SIGTERM', 1999)).to.equal('repeat');
      expect(l.decide('SIGTERM', 2000)).to.equal('exit');
    });

    it('takes a different signal after the grace started as "now"', () => {
      const l = new SignalLadder({ repeatMs: 2000, delayMs: 0 });
      expect(l.decide('SIGINT', 0)).to.equal('stop');
      expect(l.decide('SIGTERM', 10)).to.equal('exit');
    });

    it('during SHUTDOWN_DELAY_MS, a new signal skips the delay; its echo changes nothing; the next exits', () => {
      const l = ladder();
      expect(l.decide('SIGTERM', 0)).to.equal('stop');
      expect(l.decide('SIGTERM', 50)).to.equal('repeat');
      expect(l.decide('SIGINT', 3000)).to.equal('hurry');
      expect(l.decide('SIGINT', 3100)).to.equal('repeat');
      expect(l.decide('SIGTERM', 3200)).to.equal('exit');
    });

    it('a late repeat of the first signal during the delay hurries rather than exits', () => {
      const l = ladder();
      expect(l.decide('SIGTERM', 0)).to.equal('stop');
      expect(l.decide('SIGTERM', 2500)).to.equal('hurry');
      expect(l.decide('SIGTERM', 6000)).to.equal('exit');
    });

    it('with SHUTDOWN_REPEAT_MS=0 every second signal exits, as before', () => {
      const l = new SignalLadder({ repeatMs: 0, delayMs: 0 });
      expect(l.decide('SIGTERM', 0)).to.equal('stop');
      expect(l.decide('SIGTERM', 0)).to.equal('exit');
    });
  });

  describe('the real process', function () {
    this.timeout(60_000);
    let wechat: FakeWechat;
    let svc: SpawnedService | undefined;

    before(async () => (wechat = await new FakeWechat().start()));
    afterEach(() => {
      const pid = svc?.proc.pid;
      if (pid && svc?.proc.spawnargs.includes('exec')) for (const p of group(pid)) process.kill(p, 'SIGKILL');
      else if (svc?.proc.exitCode === null) svc.proc.kill('SIGKILL');
      svc = undefined;
    });
    after(() => wechat.stop());

    it('answers every request in flight when SIGTERM reaches the whole group twice, through npm', async () => {
      // npm in the chain as `npm start` has it (npm -> sh -> node, npm forwarding SIGTERM), with
      // its node flags, but on the sources: `npm start` would first spend ~10 s in tsc.
      const node = `node ${pkg.config.node_flags} --import tsx src/server.ts`;
      svc = await spawnService(
        { WECHAT_API_BASE: wechat.url, WECHAT_TIMEOUT_MS: 5000, SHUTDOWN_GRACE_MS: 8000 },
        { command: ['npm', 'exec', '--offline', '-c', node], detached: true },
      );
      const pgid = svc.proc.pid!;
      const N = 20;
      const codes = Array.from({ length: N }, (_, i) => `group-${i}`);
      codes.forEach((code, i) =>
        wechat.on(code, { delayMs: 1500, body: { openid: `o-group-${i}`, session_key: 'sk' } }),
      );
      const seen = wechat.requests.length;
      const answers = codes.map((js_code) =>
        post(svc!.url, 'getOpenid', { js_code }).then(
          (res) => res,
          (err: Error) => err,
        ),
      );
      await eventually(() => wechat.requests.length - seen === N, 10_000, 20); // all wait on WeChat

      process.kill(-pgid, 'SIGTERM');
      await new Promise((r) => setTimeout(r, 100));
      process.kill(-pgid, 'SIGTERM');

      const results = await Promise.all(answers);
      results.forEach((res, i) => {
        if (res instanceof Error) throw new Error(`${codes[i]}: ${res.message} (${String(res.cause)})`);
        expect(res.body.code, codes[i]).to.equal(0);
        expect(userPart(res.body.data), codes[i]).to.deep.equal({ openid: `o-group-${i}` });
      });
      await eventually(() => group(pgid).length === 0, 10_000, 20);
      expect(count(svc, 'shutdown signal: stopping gracefully')).to.equal(1);
      expect(count(svc, 'shutdown signal repeated: ignored (a group-delivered signal arrives twice)')).to.equal(1);
      expect(svc.logs.find((l) => l.msg === 'shutting down: no new connections')?.inflight).to.equal(N);
      expect(svc.logs.find((l) => l.msg === 'shutdown complete')?.clean).to.equal(true);
    });

    it('with SHUTDOWN_DELAY_MS, answers /readyz 503 while it still serves; a new signal ends the delay', async () => {
      svc = await spawnService({ WECHAT_API_BASE: wechat.url, SHUTDOWN_DELAY_MS: 20_000, SHUTDOWN_GRACE_MS: 5000 });
      const openid = newOpenid();
      expect((await post(svc.url, 'login', loginBody(openid))).body.code).to.equal(0);
      expect((await fetch(`${svc.opsUrl}/readyz`)).status).to.equal(200);

      const sentAt = performance.now();
      svc.proc.kill('SIGTERM');
      await eventually(() => count(svc!, 'unready: /readyz answers 503, still serving until the delay ends') === 1);
      const readyz = await fetch(`${svc.opsUrl}/readyz`);
      expect(readyz.status).to.equal(503);
      expect(((await readyz.json()) as { status: string }).status).to.equal('draining');
      // Still serving, new connections included.
      expect(await accepts(svc.url)).to.equal(true);
      for (let i = 0; i < 5; i++) expect((await post(svc.url, 'loginByOpenid', { openid })).body.code).to.equal(0);
      svc.proc.kill('SIGTERM'); // the echo: nothing changes
      await eventually(
        () => count(svc!, 'shutdown signal repeated: ignored (a group-delivered signal arrives twice)') === 1,
      );
      expect((await post(svc.url, 'loginByOpenid', { openid })).body.code).to.equal(0);
      expect(count(svc, 'shutting down: no new connections')).to.equal(0);

      svc.proc.kill('SIGINT'); // an operator who does not want to wait
      const { code, at } = await svc.exited;
      expect(code).to.equal(0);
      expect(at - sentAt).to.be.below(15_000); // well before the 20 s delay
      expect(await accepts(svc.url)).to.equal(false);
      for (const msg of [
        'shutdown signal: stopping gracefully',
        'unready: /readyz answers 503, still serving until the delay ends',
        'second shutdown signal: skipping the rest of the delay',
        'delay cut short: draining now',
        'shutting down: no new connections',
        'shutdown complete',
      ])
        expect(count(svc, msg), msg).to.equal(1);
    });

    it('with SHUTDOWN_DELAY_MS, closes the listener only once the delay is over', async () => {
      const DELAY = 1500;
      svc = await spawnService({ SHUTDOWN_DELAY_MS: DELAY });
      const sentAt = performance.now();
      svc.proc.kill('SIGTERM');
      await eventually(() => count(svc!, 'unready: /readyz answers 503, still serving until the delay ends') === 1);
      expect(await accepts(svc.url)).to.equal(true);
      const { code, at } = await svc.exited;
      expect(code).to.equal(0);
      expect(at - sentAt).to.be.at.least(DELAY);
      expect(count(svc, 'delay cut short: draining now')).to.equal(0);
    });

    it('a single process (WORKERS=1) logs that SIGHUP does nothing, and keeps serving', async () => {
      svc = await spawnService({});
      const openid = newOpenid();
      svc.proc.kill('SIGHUP');
      await eventually(() =>
        svc!.logs.some((l) => String(l.msg).startsWith('SIGHUP ignored: a single process (WORKERS=1) cannot reload')),
      );
      expect((await post(svc.url, 'login', loginBody(openid))).body.code).to.equal(0);
      expect(svc.proc.exitCode).to.equal(null);
      svc.proc.kill('SIGTERM');
      expect((await svc.exited).code).to.equal(0);
    });
  });
});
