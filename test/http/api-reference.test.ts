import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import Joi from 'joi';
import { API_REFERENCE_FILE, renderApiReference, routeExamples } from '../../src/http/api-reference';
import { codeKinds } from '../../src/http/openapi';
import { defineRoute } from '../../src/http/route';
import { userRoutes } from '../../src/users/routes';

const routes = userRoutes({} as never, {} as never);

describe('docs/api.md', () => {
  it('is what `npm run docs` writes from the route specs now', () => {
    const committed = readFileSync(API_REFERENCE_FILE, 'utf8');
    const generated = renderApiReference();
    if (committed === generated) return;
    const committedLines = committed.split('\n');
    const generatedLines = generated.split('\n');
    const at = generatedLines.findIndex((line, i) => line !== committedLines[i]);
    expect.fail(
      `docs/api.md is stale: run \`npm run docs\` and commit it.\n` +
        `First difference, line ${at + 1}:\n  committed: ${committedLines[at]}\n  generated: ${generatedLines[at]}`,
    );
  });

  it('documents every route with each of its codes, in Chinese and in English', () => {
    const page = renderApiReference();
    for (const route of routes) {
      const section = page.split(`\n## ${route.name}\n`)[1]?.split('\n## ')[0];
      expect(section, route.name).to.be.a('string');
      expect(section).to.include(`\`POST /service/user/${route.name}\``);
      for (const { code } of codeKinds(route)) {
        const line = section!.split('\n').find((l) => l.startsWith(`| ${code} | `));
        const [, zh, en] = (line ?? '').split(' | ');
        expect(zh, `${route.name} ${code}`).to.match(/\p{Script=Han}/u);
        expect(en, `${route.name} ${code}`).to.match(/[a-z]{3}/);
      }
    }
    for (const status of [404, 405, 413, 429]) expect(page).to.match(new RegExp(`\\n\\| ${status} \\| ${status} \\| `));
    expect(page).to.match(/\n\| 200 \| -10 \| /);
  });

  it('shows the configured avatar limit, the one-of rule and the rules no schema can say', () => {
    const page = renderApiReference();
    const avatar = page.split('\n## avatar\n')[1]!;
    expect(avatar).to.include('at most 2097152 bytes');
    expect(avatar).to.include('A second file part, or none, is -1');
    expect(page).to.not.include('undefined');
    expect(page).to.include('A key `__proto__` anywhere in it');
    for (const name of ['login', 'loginByOpenid']) {
      expect(page.split(`\n## ${name}\n`)[1], name).to.include('`openid` or `js_code` is required');
    }
    expect(page).to.include('405 with `Allow`');
  });

  it('gives examples that its route accepts and answers: requests pass validation, data fits the output', () => {
    for (const route of routes) {
      const { request, data } = routeExamples(route);
      expect(route.input.validate(request, { allowUnknown: false }).error?.message, route.name).to.equal(undefined);
      const output = route.output!.validate(data, { convert: false, presence: 'optional' });
      expect(output.error?.message, route.name).to.equal(undefined);
    }
  });

  it('refuses a required field without an example rather than print an example without it', () => {
    const route = defineRoute({
      name: 'probe',
      summary: 'a route whose field has no example',
      input: Joi.object({ nameless: Joi.string().required() }),
      codes: { invalid: -1, other: -2 },
      handle: async () => null,
    });
    expect(() => renderApiReference([route])).to.throw(/probe request\.nameless has no example/);
  });
});
