import { expect } from 'chai';
import { userPart, loginBody } from '../helpers/http';
import { newOpenid } from '../helpers/env';
import { launchChromium, type TestBrowser } from '../helpers/browser';
import { startService, type TestService } from '../helpers/service';

describe('GET /docs, in a real headless Chromium', function () {
  this.timeout(60_000);
  let svc: TestService;
  let browser: TestBrowser;

  before(async () => {
    svc = await startService();
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await svc?.stop();
  });

  it('serves the page from this service alone, with a CSP that allows nothing else', async () => {
    const res = await fetch(`${svc.opsUrl}/docs`);
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^text\/html/);
    expect(res.headers.get('content-security-policy')).to.include("default-src 'self'");
    const html = await res.text();
    expect(html).to.not.match(/https?:\/\//);
    // Only the listed assets are served: no path reaches the disk.
    expect((await fetch(`${svc.opsUrl}/docs/package.json`)).status).to.equal(404);
    expect((await fetch(`${svc.opsUrl}/docs/..%2Fpackage.json`)).status).to.equal(404);
    const bundle = await fetch(`${svc.opsUrl}/docs/swagger-ui-bundle.js`);
    expect(bundle.status).to.equal(200);
    expect(bundle.headers.get('content-type')).to.match(/javascript/);
    await bundle.arrayBuffer();
  });

  it('lists the six routes (and /session), and "try it out" of loginByOpenid calls the running service', async () => {
    const openid = newOpenid();
    const login = await svc.call('login', loginBody(openid, { nick_name: 'docs-user' }));
    expect(login.body.code).to.equal(0);

    const page = await browser.context.newPage();
    const origins = new Set<string>();
    const problems: string[] = [];
    page.on('request', (r) => origins.add(new URL(r.url()).origin));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(e.message));

    await page.goto(`${svc.opsUrl}/docs`);
    await page.locator('.opblock').first().waitFor({ timeout: 20_000 });
    const listed = await page.locator('.opblock-summary-operation-id').allTextContents();
    expect(listed).to.include.members(['login', 'getOpenid', 'loginByOpenid', 'logout', 'get', 'update', 'session']);
    const paths = await page.locator('.opblock-post .opblock-summary-path').allTextContents();
    expect(paths.map((p) => p.replace(/\u200b/g, ''))).to.have.members(
      [
        'login',
        'getOpenid',
        'loginByOpenid',
        'logout',
        'get',
        'update',
        'session',
        'bindPhone',
        'avatar',
        'deleteAccount',
        'exportData',
      ].map((n) => `/service/user/${n}`),
    );

    const op = page.locator('#operations-users-loginByOpenid');
    await op.locator('.opblock-summary').click();
    // The route's code table is on the page.
    expect(await op.locator('.opblock-description-wrapper').first().textContent()).to.include('no such user');
    await op.locator('.try-out__btn').click();
    await op.locator('textarea.body-param__text').fill(JSON.stringify({ openid }));
    await op.locator('.execute').click();
    const live = op.locator('.live-responses-table');
    await live.waitFor({ timeout: 10_000 });
    expect((await live.locator('tbody .response-col_status').first().textContent())?.trim()).to.equal('200');
    const body = JSON.parse((await live.locator('.response-col_description pre').first().textContent()) ?? '');
    expect(body.code).to.equal(0);
    expect(userPart(body.data)).to.deep.equal(userPart(login.body.data));
    expect(body.data.token).to.match(/^[A-Za-z0-9_-]{32}$/);

    expect([...origins]).to.deep.equal([svc.opsUrl]);
    expect(problems).to.deep.equal([]);
    await page.close();
  });
});
