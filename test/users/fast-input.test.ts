import { expect } from 'chai';
import type Joi from 'joi';
import { VALIDATION } from '../../src/http/router';
import type { RouteSpec } from '../../src/http/route';
import { identityInput, openidInput, openidShortcut, patchSchema, patchShortcut } from '../../src/users/schemas';
import { userRoutes } from '../../src/users/routes';

// Values a body field may hold: openids at and past every edge, and everything else JSON or a
// urlencoded form can carry.
const VALUES: unknown[] = [
  'oAbCdEfGhIjKlMnOpQrStUvWxYz0',
  'a',
  '-_',
  'x'.repeat(64),
  'x'.repeat(65),
  '',
  ' oAbC',
  'oAbC ',
  'o b',
  'ö',
  'a{b}',
  'a\u0000',
  'a\n',
  '0',
  0,
  12,
  -1,
  1.5,
  true,
  false,
  null,
  [],
  ['oAbC'],
  {},
  { openid: 'oAbC' },
  1,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 1,
  -0,
  '7',
  '1',
  '{"nick_name":"张三"}',
  '{bad json',
  { nick_name: '张三' },
  { gender: 1, phone: '123' },
  { nick_name: '😀'.repeat(64) },
  { nick_name: '😀'.repeat(65) },
  { nick_name: 'a\u0007' },
  { nick_name: '\ud800' },
  { nick_name: ' ' },
  { nick_name: '\u3000\t' },
  { nick_name: 'a\u202eb' },
  { nick_name: 'a\u2066' },
  { nick_name: '\u200b' },
  { nick_name: 'a\ufeff' },
  { nick_name: '👨\u200d👩\u200d👧' },
  { gender: 2 },
  { gender: '1' },
  { gender: -0 },
  { avatar: 'https://example.com/a.png' },
  { phone: '' },
  { user_id: 3 },
];
const KEYS = ['openid', 'js_code', 'token', 'unionid', 'nick_name', 'user_id', 'update', 'code', 'foo', 'constructor'];

/**
 * A small deterministic generator (the same bodies on every run, so a failure reproduces).
 * Half the bodies lead with each of the schema's own fields, so that the accepted side is not
 * left to chance.
 */
function* bodies(count: number, lead: string[]): Generator<unknown> {
  // mulberry32: every bit of it is usable (an LCG's low bits alternate, and would pair values).
  let seed = 0x2f6b1e3d;
  const next = (n: number) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), seed | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };

  yield* [null, undefined, 'openid', 5, [], [{ openid: 'oAbC' }], {}];
  for (let i = 0; i < count; i++) {
    const body: Record<string, unknown> = {};
    const keys = next(4);
    if (next(2) === 0) for (const key of lead) body[key] = VALUES[next(VALUES.length)];
    for (let k = 0; k < keys; k++) body[KEYS[next(KEYS.length)]!] = VALUES[next(VALUES.length)];
    yield body;
  }
}

/**
 * Every body the shortcut takes, the schema takes too, with the same value; and the shortcut is
 * not vacuous: hundreds of the bodies took it (and thousands did not).
 */
function holdsTo<B>(schema: Joi.Schema, shortcut: (body: B) => unknown, cases: Iterable<B>): void {
  let accepted = 0;
  let seen = 0;
  for (const body of cases) {
    seen++;
    const fast = shortcut(body);
    if (fast === undefined) continue;
    accepted++;
    const { error, value } = schema.validate(body);
    expect(error?.message, JSON.stringify(body)).to.equal(undefined);
    expect(fast, JSON.stringify(body)).to.deep.equal(value);
  }
  expect(accepted, `${accepted} of ${seen}`)
    .to.be.above(100)
    .and.below(seen - 1000);
}

const routes = userRoutes({} as never, { avatarMaxBytes: 1 } as never).filter(
  (route): route is RouteSpec & Required<Pick<RouteSpec, 'fastInput'>> => route.fastInput !== undefined,
);

describe('input shortcuts (RouteSpec.fastInput)', () => {
  it('the launch routes and update have one (loginByOpenid, get, update)', () => {
    expect(routes.map((r) => r.name)).to.include.members(['loginByOpenid', 'get', 'update']);
  });

  for (const route of routes) {
    it(`${route.name}: never accepts what its schema refuses, never answers another value`, () => {
      const lead = Object.keys((route.input.describe() as { keys: object }).keys);
      holdsTo(route.input.prefs(VALIDATION), (body) => route.fastInput(body), bodies(20000, lead));
    });
  }

  it('takes the launch body, ignoring fields no schema knows', () => {
    const fast = openidShortcut(identityInput);
    expect(fast({ openid: 'oAbCdEfGhIjKlMnOpQrStUvWxYz0' })).to.deep.equal({ openid: 'oAbCdEfGhIjKlMnOpQrStUvWxYz0' });
    expect(fast({ openid: 'oAbC', token: 't', ts: 1 })).to.deep.equal({ openid: 'oAbC' });
  });

  it('leaves to joi a body with another field of the schema, or an openid joi must refuse', () => {
    const fast = openidShortcut(identityInput);
    expect(fast({ openid: 'oAbC', js_code: '0a1B' })).to.equal(undefined);
    expect(fast({ js_code: '0a1B' })).to.equal(undefined);
    expect(fast({ openid: 'o b' })).to.equal(undefined);
    expect(fast({ openid: 7 })).to.equal(undefined);
    expect(fast({})).to.equal(undefined);
    // js_code is no field of get's schema: there it is an unknown field, ignored.
    expect(openidShortcut(openidInput)({ openid: 'oAbC', js_code: '0a1B' })).to.deep.equal({ openid: 'oAbC' });
  });

  it('answers a new object each call: guards write the settled openid into it', () => {
    const fast = openidShortcut(identityInput);
    const body = { openid: 'oAbC' };
    const a = fast(body);
    expect(a).to.not.equal(body);
    expect(fast(body)).to.not.equal(a);
  });

  it("update's patch: never accepts what patchSchema refuses, never answers another patch", () => {
    const objects = [...bodies(24000, ['nick_name', 'gender', 'phone'])].filter(
      (body): body is object => typeof body === 'object' && body !== null,
    );
    holdsTo(patchSchema.prefs({ abortEarly: true, convert: true }), patchShortcut, objects);
    // The edges joi decides: 65 emoji, a control character, a lone surrogate, "1", -0, a URL.
    for (const patch of [
      { nick_name: '😀'.repeat(65) },
      { nick_name: 'a\u0007' },
      { nick_name: '\ud800' },
      { gender: '1' },
      { gender: -0 },
      { avatar: 'https://example.com/a.png' },
      {},
    ]) {
      expect(patchShortcut(patch), JSON.stringify(patch)).to.equal(undefined);
    }
    expect(patchShortcut({ nick_name: '😀'.repeat(64), gender: 0 })).to.deep.equal({
      nick_name: '😀'.repeat(64),
      gender: 0,
    });
  });
});
