import { expect } from 'chai';
import { existsSync, mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import sharp from 'sharp';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';
import { eventually } from '../helpers/wait';

const BASE = 'https://cdn.example.test';

function photo(width: number, height: number, opts: { progressive?: boolean; noise?: boolean } = {}): Promise<Buffer> {
  const background = { r: 20, g: 130, b: 90 };
  const noise = opts.noise ? { type: 'gaussian' as const, mean: 128, sigma: 30 } : undefined;
  return sharp({ create: { width, height, channels: 3, background, noise } })
    .jpeg({ progressive: opts.progressive ?? false, quality: 30 })
    .toBuffer();
}

async function upload(
  svc: TestService,
  token: string,
  file: Buffer,
): Promise<{ status: number; code: number; avatar?: string }> {
  const form = new FormData();
  form.append('file', new Blob([file], { type: 'image/jpeg' }), 'a.jpg');
  const res = await fetch(`${svc.url}/service/user/avatar`, {
    method: 'POST',
    body: form,
    headers: { authorization: `Bearer ${token}` },
  });
  const body = (await res.json()) as { code: number; data?: { avatar: string } };
  return { status: res.status, code: body.code, avatar: body.data?.avatar };
}

/** An upload whose file arrives `perSecond` bytes a second (0: nothing after the part header). */
function slowUpload(
  svc: TestService,
  token: string,
  perSecond: number,
): { status: Promise<number | null>; stop(): void } {
  const { hostname, port } = new URL(svc.url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => undefined);
  socket.write(
    `POST /service/user/avatar HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
      'Content-Type: multipart/form-data; boundary=b0\r\nContent-Length: 1000000\r\n\r\n' +
      '--b0\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n',
  );
  const timer = perSecond ? setInterval(() => socket.write(Buffer.alloc(perSecond / 4, 1)), 250) : undefined;
  const status = new Promise<number | null>((resolve) => {
    let head = '';
    socket.on('data', (c: Buffer) => {
      head += c.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
      if (m) resolve(Number(m[1]));
    });
    socket.once('close', () => resolve(null));
  });
  void status.then(() => clearInterval(timer));
  return {
    status,
    stop: () => {
      clearInterval(timer);
      socket.destroy();
    },
  };
}

describe('avatar uploads: bounded slots, unique names, no orphan files', function () {
  this.timeout(30_000);
  let svc: TestService;
  const mediaDir = testConfig().media.dir;
  const files = (userId: number) =>
    existsSync(join(mediaDir, 'avatar'))
      ? readdirSync(join(mediaDir, 'avatar'))
          .filter((f) => f.startsWith(`${userId}_`))
          .sort()
      : [];
  const nameOf = (url: string) => url.split('/').pop()!;

  before(async () => {
    svc = await startService({
      PUBLIC_BASE_URL: BASE,
      REDIS_COMMAND_TIMEOUT_MS: 2000,
      AVATAR_UPLOADS_MAX: 12,
      AVATAR_UPLOADS_PER_USER: 8,
      MEDIA_SWEEP_INTERVAL_MS: 100,
    });
  });
  after(() => svc.stop());

  async function user(): Promise<{ openid: string; token: string; user_id: number }> {
    const openid = newOpenid('avb');
    const login = await svc.call('login', loginBody(openid, { avatar: 'https://thirdwx.qlogo.cn/mmopen/x/132' }));
    expect(login.body.code).to.equal(0);
    return { openid, token: login.body.data.token, user_id: login.body.data.user_id };
  }

  it('8 concurrent uploads of one user leave one file, the one its row names', async () => {
    const u = await user();
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, i) => photo(40 + i, 40)).map(async (p) => upload(svc, u.token, await p)),
    );
    for (const a of answers) expect(a.code).to.equal(0);
    const stored = (await svc.call('get', { openid: u.openid })).body.data.avatar as string;
    await eventually(() => files(u.user_id).length === 1, 2000, 20);
    expect(files(u.user_id)).to.deep.equal([nameOf(stored)]);
  });

  it('an update that replaces an uploaded avatar removes its file: 5 x (upload, update) leave none', async () => {
    const u = await user();
    for (let i = 0; i < 5; i++) {
      expect((await upload(svc, u.token, await photo(30 + i, 30))).code).to.equal(0);
      const set = await svc.call('update', { user_id: u.user_id, update: { avatar: `https://example.com/${i}.jpg` } });
      expect(set.body.code).to.equal(0);
    }
    await eventually(() => files(u.user_id).length === 0, 2000, 20);
  });

  it('the sweep removes what a crash left (a file never stored, a half-written one), never a referenced or young file', async () => {
    const u = await user();
    const current = nameOf((await upload(svc, u.token, await photo(32, 32))).avatar!);
    const dir = join(mediaDir, 'avatar');
    mkdirSync(dir, { recursive: true });
    const old = new Date(Date.now() - 5 * 60_000);
    const crashed = `${u.user_id}_20260101000000_0123456789ab.jpg`;
    const legacyName = `${u.user_id}_20250101000000.png`;
    const halfWritten = `.tmp-${u.user_id}feedfacecafe`;
    const young = `${u.user_id}_20260101000001_ba9876543210.jpg`;
    for (const name of [crashed, legacyName, halfWritten, young]) writeFileSync(join(dir, name), 'x');
    for (const name of [crashed, legacyName, halfWritten, current]) utimesSync(join(dir, name), old, old);
    await eventually(() => !existsSync(join(dir, crashed)) && !existsSync(join(dir, halfWritten)), 5000, 50);
    expect(existsSync(join(dir, legacyName))).to.equal(false);
    // The referenced avatar stays, however old; a young file may be an upload in flight.
    expect(files(u.user_id)).to.deep.equal([current, young].sort());
    expect((await fetch(`${svc.url}/media/avatar/${current}`)).status).to.equal(200);
  });

  it('never gives a name twice: consecutive uploads (several a second) get distinct names, each its own content', async () => {
    const u = await user();
    const names: string[] = [];
    for (let i = 0; i < 6; i++) {
      const a = await upload(svc, u.token, await photo(20 + i, 20));
      expect(a.code).to.equal(0);
      names.push(nameOf(a.avatar!));
    }
    expect(new Set(names).size).to.equal(6);
    for (const name of names) expect(name).to.match(new RegExp(`^${u.user_id}_\\d{14}_[0-9a-f]{12}\\.jpg$`));
    // The replaced ones are gone for good, the last one is served.
    for (const name of names.slice(0, -1))
      expect((await fetch(`${svc.url}/media/avatar/${name}`)).status).to.equal(404);
    const last = await fetch(`${svc.url}/media/avatar/${names.at(-1)}`);
    expect((await sharp(Buffer.from(await last.arrayBuffer())).metadata()).width).to.equal(20);
  });

  it('decodes by budget: a 12 Mpx baseline JPEG is taken, the same progressive (37 MB to decode) is -1', async () => {
    const u = await user();
    expect((await upload(svc, u.token, await photo(4032, 3024))).code).to.equal(0);
    const progressive = await upload(svc, u.token, await photo(4032, 3024, { progressive: true }));
    expect(progressive.code).to.equal(-1);
  });
});

describe('avatar upload slots: per user, per process, minimum rate', function () {
  this.timeout(30_000);
  let svc: TestService;

  before(async () => {
    svc = await startService({
      REDIS_COMMAND_TIMEOUT_MS: 2000,
      AVATAR_UPLOADS_MAX: 3,
      AVATAR_UPLOADS_PER_USER: 2,
      AVATAR_UPLOAD_MIN_BYTES_PER_S: 64 * 1024,
    });
  });
  after(() => svc.stop());

  const token = async () => (await svc.call('login', loginBody(newOpenid('slot')))).body.data.token as string;

  it("a user's third upload at once is 429, the process's fourth 503, both with Retry-After; others' calls go on", async () => {
    const [a, b] = [await token(), await token()];
    const held = [slowUpload(svc, a, 0), slowUpload(svc, a, 0)];
    await new Promise((r) => setTimeout(r, 200));
    const form = new FormData();
    form.append('file', new Blob([await photo(16, 16)]), 'a.jpg');
    const third = await fetch(`${svc.url}/service/user/avatar`, {
      method: 'POST',
      body: form,
      headers: { authorization: `Bearer ${a}` },
    });
    expect(third.status).to.equal(429);
    expect(third.headers.get('retry-after')).to.equal('1');
    held.push(slowUpload(svc, b, 0));
    await new Promise((r) => setTimeout(r, 200));
    const fourth = await fetch(`${svc.url}/service/user/avatar`, {
      method: 'POST',
      body: form,
      headers: { authorization: `Bearer ${b}` },
    });
    expect(fourth.status).to.equal(503);
    expect(fourth.headers.get('retry-after')).to.equal('1');
    expect(((await fourth.json()) as { code: number }).code).to.equal(503);
    expect((await svc.call('get', { openid: 'nobody-here' })).body.code).to.equal(-4);
    for (const h of held) h.stop();
  });

  it('cuts an upload that trickles below the minimum rate (408), as one that stops', async () => {
    const started = performance.now();
    const [trickle, stalled] = [slowUpload(svc, await token(), 16 * 1024), slowUpload(svc, await token(), 0)];
    expect(await trickle.status).to.equal(408);
    expect(await stalled.status).to.equal(408);
    // The window is 5 s: cut long before the 20 s request timeout.
    expect(performance.now() - started).to.be.below(10_000);
  });

  it("one user's uploads from 8 connections do not starve another user's: it waits behind one of theirs at most", async () => {
    const [attacker, other] = [await token(), await token()];
    // Within the decode budget (23.5 MB) but slow: ~300 ms of decode each, 780 KB.
    const heavy = await photo(2800, 2800, { noise: true, progressive: true });
    let stop = false;
    const done: number[] = [];
    const codes = new Set<number>();
    const loops = Array.from({ length: 8 }, async () => {
      while (!stop) {
        const a = await upload(svc, attacker, heavy);
        codes.add(a.code);
        if (a.code === 0) done.push(performance.now());
      }
    });
    await new Promise((r) => setTimeout(r, 1000));
    const from = performance.now();
    const mine = await upload(svc, other, await photo(64, 64));
    const to = performance.now();
    stop = true;
    await Promise.all(loops);
    expect(mine.code).to.equal(0);
    // Never behind a queue of the attacker's eight. Its answers while this one was in flight: the
    // one decoded before it arrived (still being stored and answered), the one decoding when it
    // was queued, and the one decoded next, which may finish while this one's file is written
    // and its row updated. A queue of the attacker's own would show most of its 8 here.
    expect(done.filter((t) => t > from && t < to).length).to.be.at.most(3);
    expect([...codes].every((c) => c === 0 || c === 429)).to.equal(true);
  });
});

describe('avatar uploads and the rate limits', () => {
  it('a user starts at most AVATAR_UPLOADS_PER_USER_PER_MINUTE uploads (however many connections and addresses)', async () => {
    const svc = await startService({ AVATAR_UPLOADS_PER_USER_PER_MINUTE: 3, REDIS_COMMAND_TIMEOUT_MS: 2000 });
    try {
      const [a, b] = [newOpenid('pace'), newOpenid('pace')];
      const tokens = await Promise.all(
        [a, b].map(async (o) => (await svc.call('login', loginBody(o))).body.data.token),
      );
      const file = await photo(16, 16);
      const answers = [];
      for (let i = 0; i < 4; i++) answers.push((await upload(svc, tokens[0], file)).status);
      expect(answers).to.deep.equal([200, 200, 200, 429]);
      expect((await upload(svc, tokens[1], file)).code).to.equal(0);
    } finally {
      await svc.stop();
    }
  });

  it('an upload takes 10 of the client budget (RATE_LIMIT_IP): 60 a minute at the default 600', async () => {
    // Its own key prefix: the client budget of 127.0.0.1 is shared by every service of the run.
    const svc = await startService({
      RATE_LIMIT_IP: 35,
      REDIS_COMMAND_TIMEOUT_MS: 2000,
      REDIS_KEY_PREFIX: `${testConfig().redis.keyPrefix}upload-rl:`,
    });
    try {
      const login = await svc.call('login', loginBody(newOpenid('rl')));
      const file = await photo(16, 16);
      // The login took 1 of 35: three uploads take 30 more, the fourth is over.
      const codes = [];
      for (let i = 0; i < 4; i++) codes.push((await upload(svc, login.body.data.token, file)).code);
      expect(codes).to.deep.equal([0, 0, 0, 429]);
    } finally {
      await svc.stop();
    }
  });
});
