import { expect } from 'chai';
import { existsSync, readdirSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import sharp from 'sharp';
import { userOutput } from '../../src/users/schemas';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { FakeWechat } from '../helpers/fake-wechat';
import { startService, type TestService } from '../helpers/service';

const PUBLIC_BASE_URL = 'https://cdn.example.test/base';
const MAX = 2 * 1024 * 1024;

/** A photo with EXIF, GPS position included, as a phone camera writes it. */
async function photo(width: number, height: number, format: 'jpeg' | 'png' | 'webp' = 'jpeg'): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: { r: 200, g: 30, b: 90 } } })
    .toFormat(format)
    .withExif({
      IFD0: { Make: 'PhoneMaker', Model: 'SecretCam 9', Copyright: 'EXIF-MARKER' },
      IFD3: {
        GPSLatitudeRef: 'N',
        GPSLatitude: '39/1 54/1 27/1',
        GPSLongitudeRef: 'E',
        GPSLongitude: '116/1 23/1 17/1',
      },
    })
    .toBuffer();
}

interface Upload {
  status: number;
  body: { code: number; msg: string; data: any };
}

/** What wx.uploadFile sends: multipart/form-data, the file in `file`, the token in Authorization. */
async function upload(
  svc: TestService,
  token: string | null,
  data: Buffer | string,
  opts: { filename?: string; type?: string; field?: string; extra?: Record<string, string> } = {},
): Promise<Upload> {
  const form = new FormData();
  for (const [k, v] of Object.entries(opts.extra ?? {})) form.append(k, v);
  form.append(opts.field ?? 'file', new Blob([data], { type: opts.type ?? 'image/jpeg' }), opts.filename ?? 'tmp.jpg');
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const res = await fetch(`${svc.url}/service/user/avatar`, { method: 'POST', body: form, headers });
  return { status: res.status, body: (await res.json()) as Upload['body'] };
}

/** A raw GET, so that the path reaches the server exactly as written (fetch would normalise it). */
function rawGet(
  base: string,
  path: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('avatar upload (multipart, sharp) and /media serving', function () {
  this.timeout(30_000);
  let svc: TestService;
  let wechat: FakeWechat;
  let mediaDir: string;

  async function user(): Promise<{ openid: string; token: string; user_id: number }> {
    const openid = newOpenid('av');
    const login = await svc.call('login', loginBody(openid, { avatar: 'https://thirdwx.qlogo.cn/mmopen/x/132' }));
    expect(login.body.code).to.equal(0);
    return { openid, token: login.body.data.token, user_id: login.body.data.user_id };
  }

  const pathOf = (avatarUrl: string) => avatarUrl.slice(PUBLIC_BASE_URL.length);
  const avatarFiles = (userId: number) =>
    existsSync(join(mediaDir, 'avatar'))
      ? readdirSync(join(mediaDir, 'avatar')).filter((f) => f.startsWith(`${userId}_`))
      : [];

  before(async () => {
    wechat = await new FakeWechat().start();
    // A loaded machine must not turn a slow Redis reply into a failed upload.
    svc = await startService({ PUBLIC_BASE_URL, WECHAT_API_BASE: wechat.url, REDIS_COMMAND_TIMEOUT_MS: 2000 });
    mediaDir = testConfig().media.dir;
  });
  after(async () => {
    await svc.stop();
    await wechat.stop();
  });

  it('stores a photo re-encoded, square, at most 512 px and without its EXIF, and serves it', async () => {
    const u = await user();
    const original = await photo(1200, 800);
    expect((await sharp(original).metadata()).exif).to.be.an.instanceOf(Buffer);
    expect(original.includes('EXIF-MARKER')).to.equal(true);

    const res = await upload(svc, u.token, original);
    expect(res.status).to.equal(200);
    expect(res.body.code, res.body.msg).to.equal(0);
    const avatar: string = res.body.data.avatar;
    expect(avatar).to.match(new RegExp(`^${PUBLIC_BASE_URL}/media/avatar/${u.user_id}_\\d{14}_[0-9a-f]{12}\\.jpg$`));
    expect(res.body.data).to.include({ user_id: u.user_id, openid: u.openid });
    expect(userOutput.validate(res.body.data, { convert: false }).error).to.equal(undefined);
    // Through the same update path: a read right after sees the new avatar.
    expect((await svc.call('get', { openid: u.openid })).body.data.avatar).to.equal(avatar);

    const served = await fetch(svc.url + pathOf(avatar));
    expect(served.status).to.equal(200);
    expect(served.headers.get('content-type')).to.equal('image/jpeg');
    expect(served.headers.get('x-content-type-options')).to.equal('nosniff');
    expect(served.headers.get('cache-control')).to.equal('public, max-age=31536000, immutable');
    const bytes = Buffer.from(await served.arrayBuffer());
    expect(Number(served.headers.get('content-length'))).to.equal(bytes.length);
    const meta = await sharp(bytes).metadata();
    expect(meta).to.include({ format: 'jpeg', width: 512, height: 512 });
    expect(meta.exif).to.equal(undefined);
    expect(meta.xmp).to.equal(undefined);
    expect(bytes.includes('EXIF-MARKER')).to.equal(false);
    expect(bytes.includes('SecretCam')).to.equal(false);
  });

  it('keeps PNG and WebP in their type, and never enlarges a small image (a square of its short side)', async () => {
    const u = await user();
    const png = await upload(svc, u.token, await photo(300, 200, 'png'), { filename: 'a.png', type: 'image/png' });
    expect(png.body.code, png.body.msg).to.equal(0);
    expect(png.body.data.avatar).to.match(/\.png$/);
    const pngBytes = Buffer.from(await (await fetch(svc.url + pathOf(png.body.data.avatar))).arrayBuffer());
    expect(await sharp(pngBytes).metadata()).to.include({ format: 'png', width: 200, height: 200 });

    // The name and the declared type do not matter, the content does.
    const webp = await upload(svc, u.token, await photo(600, 900, 'webp'), { filename: 'x.jpg', type: 'image/jpeg' });
    expect(webp.body.code, webp.body.msg).to.equal(0);
    const res = await fetch(svc.url + pathOf(webp.body.data.avatar));
    expect(res.headers.get('content-type')).to.equal('image/webp');
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    expect(meta).to.include({ format: 'webp', width: 512, height: 512 });
    expect(meta.exif).to.equal(undefined);
  });

  it('refuses a text file named .jpg and an SVG (-1), and a 3 MiB upload (413), changing nothing', async () => {
    const u = await user();
    const text = await upload(svc, u.token, 'hello, I am not a picture', { filename: 'photo.jpg' });
    expect(text.body.code).to.equal(-1);
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>';
    const svgAnswer = await upload(svc, u.token, svg, { filename: 'a.svg', type: 'image/svg+xml' });
    expect(svgAnswer.body.code).to.equal(-1);
    // A JPEG's first bytes followed by garbage: sniffed as JPEG, refused by the decoder.
    const fake = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(2000, 7)]);
    expect((await upload(svc, u.token, fake)).body.code).to.equal(-1);

    const big = Buffer.concat([await photo(64, 64), Buffer.alloc(3 * 1024 * 1024, 1)]);
    const tooBig = await upload(svc, u.token, big);
    expect(tooBig.status).to.equal(413);
    expect(tooBig.body.code).to.equal(413);
    // One byte over the limit is refused, the limit itself is not (size checked on the file).
    const justOver = Buffer.concat([await photo(64, 64), Buffer.alloc(MAX, 1)]).subarray(0, MAX + 1);
    expect((await upload(svc, u.token, justOver)).status).to.equal(413);

    expect((await svc.call('get', { openid: u.openid })).body.data.avatar).to.equal(
      'https://thirdwx.qlogo.cn/mmopen/x/132',
    );
    expect(avatarFiles(u.user_id)).to.deep.equal([]);
  });

  it('refuses an oversized upload sent without Content-Length while it streams (413)', async () => {
    const u = await user();
    const boundary = '----wxUploadBoundary';
    const started = performance.now();
    let sent = 0;
    let sentAtAnswer = 0;
    const status = await new Promise<number>((resolve, reject) => {
      const url = new URL(svc.url);
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          path: '/service/user/avatar',
          method: 'POST',
          headers: {
            authorization: `Bearer ${u.token}`,
            'content-type': `multipart/form-data; boundary=${boundary}`,
            'transfer-encoding': 'chunked',
          },
        },
        (res) => {
          sentAtAnswer = sent;
          res.resume();
          resolve(res.statusCode!);
        },
      );
      req.on('error', reject);
      req.write(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n` +
          'Content-Type: image/jpeg\r\n\r\n',
      );
      // 64 KiB at a time, up to 8 MiB: the answer must come long before the end.
      const chunk = Buffer.alloc(64 * 1024, 0xff);
      const pump = () => {
        while (sent < 8 * 1024 * 1024) {
          sent += chunk.length;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end(`\r\n--${boundary}--\r\n`);
      };
      pump();
    });
    expect(status).to.equal(413);
    // Refused while it streamed: the answer came before the client got to send it all.
    expect(sentAtAnswer).to.be.below(8 * 1024 * 1024);
    expect(performance.now() - started).to.be.below(10_000);
    expect(avatarFiles(u.user_id)).to.deep.equal([]);
  });

  it('removes the file it replaced; two uploads in one second get two names', async () => {
    const u = await user();
    const first = await upload(svc, u.token, await photo(100, 100));
    const second = await upload(svc, u.token, await photo(120, 100));
    expect(first.body.code).to.equal(0);
    expect(second.body.code).to.equal(0);
    expect(second.body.data.avatar).to.not.equal(first.body.data.avatar);
    expect((await fetch(svc.url + pathOf(first.body.data.avatar))).status).to.equal(404);
    expect((await fetch(svc.url + pathOf(second.body.data.avatar))).status).to.equal(200);
    expect(avatarFiles(u.user_id)).to.deep.equal([second.body.data.avatar.split('/').pop()]);
    // Another user's upload leaves this one's file alone.
    const other = await user();
    expect((await upload(svc, other.token, await photo(50, 50))).body.code).to.equal(0);
    expect(avatarFiles(u.user_id)).to.have.length(1);
  });

  it("an avatar URL set through update that names another user's file does not get that file removed", async () => {
    const victim = await user();
    const victimAvatar = (await upload(svc, victim.token, await photo(80, 80))).body.data.avatar as string;
    const attacker = await user();
    const set = await svc.call('update', { user_id: attacker.user_id, update: { avatar: victimAvatar } });
    expect(set.body.code).to.equal(0);
    expect((await upload(svc, attacker.token, await photo(80, 80))).body.code).to.equal(0);
    expect((await fetch(svc.url + pathOf(victimAvatar))).status).to.equal(200);
  });

  it('-10 without a session, -4 for a session without a user, -1 for a body that is not multipart', async () => {
    const jpeg = await photo(64, 64);
    expect((await upload(svc, null, jpeg)).body.code).to.equal(-10);
    expect((await upload(svc, 'A'.repeat(32), jpeg)).body.code).to.equal(-10);

    const openid = newOpenid('av-unregistered');
    wechat.on('js-av', { body: { openid, session_key: 'sk' } });
    const session = await svc.call('getOpenid', { js_code: 'js-av' });
    expect((await upload(svc, session.body.data.token, jpeg)).body.code).to.equal(-4);

    const u = await user();
    const json = await svc.call(
      'avatar',
      { file: jpeg.toString('base64') },
      { headers: { authorization: `Bearer ${u.token}` } },
    );
    expect(json.body.code).to.equal(-1);
    // Another route given a multipart body does not read it: invalid parameters.
    const form = new FormData();
    form.append('openid', u.openid);
    const res = await fetch(`${svc.url}/service/user/get`, { method: 'POST', body: form });
    expect(((await res.json()) as Upload['body']).code).to.equal(-1);
  });

  it('bounds the form around the file: a wrong field, two files, too many fields are -1', async () => {
    const u = await user();
    const jpeg = await photo(64, 64);
    expect((await upload(svc, u.token, jpeg, { field: 'image' })).body.code).to.equal(-1);
    const many: Record<string, string> = {};
    for (let i = 0; i < 20; i++) many[`f${i}`] = 'x';
    expect((await upload(svc, u.token, jpeg, { extra: many })).body.code).to.equal(-1);
    const form = new FormData();
    form.append('file', new Blob([jpeg], { type: 'image/jpeg' }), 'a.jpg');
    form.append('file', new Blob([jpeg], { type: 'image/jpeg' }), 'b.jpg');
    const two = await fetch(`${svc.url}/service/user/avatar`, {
      method: 'POST',
      body: form,
      headers: { authorization: `Bearer ${u.token}` },
    });
    expect(((await two.json()) as Upload['body']).code).to.equal(-1);
    // A part header beyond busboy's 16 KiB, and a request of many empty parts, are refused too.
    const raw = async (body: string) => {
      const res = await fetch(`${svc.url}/service/user/avatar`, {
        method: 'POST',
        body,
        headers: { authorization: `Bearer ${u.token}`, 'content-type': 'multipart/form-data; boundary=b0' },
      });
      return (await res.json()) as Upload['body'];
    };
    const hugeHeader = `--b0\r\nContent-Disposition: form-data; name="file"; filename="${'a'.repeat(20_000)}.jpg"\r\n\r\nx\r\n--b0--\r\n`;
    expect(await raw(hugeHeader)).to.deep.include({ code: -1, msg: 'malformed multipart/form-data body' });
    const parts = Array.from(
      { length: 50 },
      (_, i) => `--b0\r\nContent-Disposition: form-data; name="p${i}"\r\n\r\n\r\n`,
    );
    expect((await raw(`${parts.join('')}--b0--\r\n`)).msg).to.match(/^too many (fields|parts)/);
    // wx.uploadFile's formData beside the file is fine.
    expect((await upload(svc, u.token, jpeg, { extra: { note: 'hi' } })).body.code).to.equal(0);
  });

  it('answers 404 for every other path under /media, traversal attempts included', async () => {
    const u = await user();
    const stored = (await upload(svc, u.token, await photo(64, 64))).body.data.avatar as string;
    const name = stored.split('/').pop()!;
    expect((await rawGet(svc.url, `/media/avatar/${name}`)).status).to.equal(200);
    const attempts = [
      '/media',
      '/media/',
      '/media/avatar/',
      '/media/avatar/..',
      `/media/avatar/../avatar/${name}`,
      `/media/avatar/%2e%2e/avatar/${name}`,
      '/media/avatar/%2e%2e%2f%2e%2e%2fpackage.json',
      '/media/%2e%2e/%2e%2e/package.json',
      '/media/../package.json',
      '/media/avatar/..%2f..%2fpackage.json',
      '/media/avatar/..%5c..%5cpackage.json',
      '/media/avatar\\..\\..\\package.json',
      `/media/avatar%2f${name}`,
      `/media/avatar/${name}%00.png`,
      `/media/avatar/${name}%00`,
      `/media/avatar/${name.replace('.jpg', '.JPG')}`,
      `/media/avatar/${name}/`,
      `/media//avatar/${name}`,
      `/media/avatar/.${name}`,
      '/media/avatar/1_20200401184953.jpg',
      '/media/avatar/.tmp-0011223344556677',
      '/media/other/x.jpg',
    ];
    for (const path of attempts) {
      const res = await rawGet(svc.url, path);
      expect(res.status, path).to.equal(404);
      expect(res.headers['content-type'], path).to.match(/^application\/json/);
    }
    // Not a file server for anything else either: only GET and HEAD.
    const head = await fetch(`${svc.url}/media/avatar/${name}`, { method: 'HEAD' });
    expect(head.status).to.equal(200);
    expect(head.headers.get('content-type')).to.equal('image/jpeg');
  });
});
