import { expect } from 'chai';
import { newOpenid } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { LogCapture, startService, type TestService } from '../helpers/service';

const PHONE = '13812345678';
const TOKEN = 'tok-very-secret-0123456789';

interface Line {
  level: number;
  msg: string;
  reqId: string;
  method: string;
  path: string;
  route: string;
  code: number | null;
  status: number;
  ms: number;
}

describe('request log', () => {
  let svc: TestService;
  const logs = new LogCapture();
  const requestLines = (): Line[] => logs.lines.map((l) => JSON.parse(l) as Line).filter((l) => l.msg === 'request');

  before(async () => (svc = await startService({ LOG_LEVEL: 'info' }, logs)));
  after(() => svc.stop());

  it('writes one JSON line per request with method, route, document code, status and duration', async () => {
    const openid = newOpenid();
    const before = requestLines().length;
    const ok = await svc.call('login', loginBody(openid));
    const bad = await svc.call('get', {});
    const missing = await svc.call('get', { openid: newOpenid() });
    const lines = requestLines().slice(before);
    expect(lines).to.have.length(3);
    expect(lines[0]).to.include({ method: 'POST', path: '/service/user/login', route: 'login', code: 0, status: 200 });
    expect(lines[0].reqId).to.equal(ok.headers.get('x-request-id'));
    expect(lines[0].ms).to.be.a('number').and.at.least(0);
    expect(lines[1]).to.include({ route: 'get', code: -1, status: 200, reqId: bad.headers.get('x-request-id') });
    expect(lines[2]).to.include({ route: 'get', code: -4, status: 200, reqId: missing.headers.get('x-request-id') });
  });

  it('labels an unknown path "unmatched" and still logs its HTTP status and code', async () => {
    const before = requestLines().length;
    await svc.call('/service/user/nope', {});
    const [line] = requestLines().slice(before);
    expect(line).to.include({ route: 'unmatched', code: 404, status: 404, path: '/service/user/nope' });
  });

  it("echoes the caller's X-Request-Id, and generates one when it is absent or not an id", async () => {
    const openid = newOpenid();
    const given = await svc.call('get', { openid }, { headers: { 'X-Request-Id': 'trace-abc.123:9' } });
    expect(given.headers.get('x-request-id')).to.equal('trace-abc.123:9');

    const generated = await svc.call('get', { openid });
    expect(generated.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/);

    for (const hostile of ['has spaces in it', 'x'.repeat(200), '<script>', 'a\tb']) {
      const res = await svc.call('get', { openid }, { headers: { 'X-Request-Id': hostile } });
      const id = res.headers.get('x-request-id');
      expect(id, hostile).to.match(/^[0-9a-f-]{36}$/);
      expect(requestLines().at(-1)?.reqId).to.equal(id);
    }
  });

  it('never logs bodies, phone numbers or the Authorization header', async () => {
    const openid = newOpenid();
    const auth = { headers: { Authorization: `Bearer ${TOKEN}`, Cookie: `sid=${TOKEN}` } };
    const login = await svc.call(
      'login',
      { openid, nick_name: 'nick-in-body', avatar: 'https://e.com/a', gender: 1, phone: PHONE, token: TOKEN },
      auth,
    );
    expect(login.body.code).to.equal(0);
    await svc.call('get', { openid }, auth);
    await svc.call('update', { user_id: login.body.data.user_id, update: { phone: `${PHONE}9` } }, auth);
    await svc.call('login', { openid, phone: PHONE }, auth); // -1: the refused body is not logged either
    expect(requestLines().length).to.be.greaterThan(3);
    for (const secret of [PHONE, TOKEN, 'nick-in-body', 'Bearer']) {
      expect(logs.text, secret).to.not.include(secret);
    }
  });
});
