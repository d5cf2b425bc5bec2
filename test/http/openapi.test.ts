import SwaggerParser from '@apidevtools/swagger-parser';
import { expect } from 'chai';
import Joi from 'joi';
import { toOpenApiSchema } from '../../src/http/openapi';
import type { RouteSpec } from '../../src/http/route';
import { userRoutes } from '../../src/users/routes';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { startService, type TestService } from '../helpers/service';

const ROUTES = ['login', 'getOpenid', 'loginByOpenid', 'logout', 'get', 'update', 'session'];
const specs = new Map<string, RouteSpec>(userRoutes({} as never, {} as never).map((r) => [r.name, r]));

describe('OpenAPI document', function () {
  this.timeout(20_000);
  let svc: TestService;
  let wechat: FakeWechat;
  let doc: any;

  before(async () => {
    wechat = await new FakeWechat().start();
    svc = await startService({ WECHAT_API_BASE: wechat.url, AVATAR_MAX_BYTES: 2 * 1024 * 1024 });
    const res = await fetch(`${svc.opsUrl}/openapi.json`);
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^application\/json/);
    doc = await res.json();
  });
  after(async () => {
    await svc.stop();
    await wechat.stop();
  });

  it('is a valid OpenAPI 3 document', async () => {
    expect(doc.openapi).to.match(/^3\./);
    await SwaggerParser.validate(structuredClone(doc));
  });

  it('has every route, each with every code of its table and a JSON and form body', () => {
    for (const name of ROUTES) {
      const op = doc.paths[`/service/user/${name}`]?.post;
      expect(op, name).to.be.an('object');
      expect(op.operationId).to.equal(name);
      const spec = specs.get(name)!;
      // Routes with an owner also answer -10 in strict mode (AUTH_MODE=token); identifying
      // routes in either mode (a proof for another openid).
      const strict = spec.owner || spec.identifies ? [-10] : [];
      const codes = [...new Set([...Object.values(spec.codes), ...strict])].sort((a, b) => b - a);
      const [success, failure] = op.responses['200'].content['application/json'].schema.oneOf;
      expect(success.properties.code.enum, name).to.deep.equal([0]);
      expect(failure.properties.code.enum, name).to.deep.equal(codes);
      expect(op['x-codes'].map((c: { code: number }) => c.code)).to.deep.equal([0, ...codes]);
      for (const code of codes) expect(op.description, `${name} ${code}`).to.include(`| ${code} |`);
      expect(Object.keys(op.requestBody.content)).to.deep.equal([
        'application/json',
        'application/x-www-form-urlencoded',
      ]);
      expect(op.responses['413']).to.be.an('object');
    }
    // The document's tables, spot-checked: get has four failure codes (and strict mode's -10),
    // update's -3 is bad JSON.
    expect(doc.paths['/service/user/get'].post['x-codes'].map((c: { code: number }) => c.code)).to.deep.equal([
      0, -1, -2, -3, -4, -10,
    ]);
    // Every route is rate limited, and documents its HTTP 429.
    for (const name of ['login', 'getOpenid', 'loginByOpenid', 'get', 'update', 'logout', 'session']) {
      expect(doc.paths[`/service/user/${name}`].post.responses['429'], name).to.be.an('object');
    }
    const updateCodes = doc.paths['/service/user/update'].post['x-codes'];
    expect(updateCodes.find((c: { code: number }) => c.code === -3).meaning).to.include('not JSON');
  });

  it('allows -10 on login and loginByOpenid, which the identity guard answers in both modes', () => {
    for (const name of ['login', 'loginByOpenid']) {
      const op = doc.paths[`/service/user/${name}`].post;
      const failure = op.responses['200'].content['application/json'].schema.oneOf[1];
      expect(failure.properties.code.enum, name).to.include(-10);
      expect(op['x-codes'].find((c: { code: number }) => c.code === -10).meaning, name).to.include('another openid');
    }
    // getOpenid proves nothing about a body openid: no guard answers it -10.
    const getOpenid = doc.paths['/service/user/getOpenid'].post;
    expect(getOpenid['x-codes'].map((c: { code: number }) => c.code)).to.not.include(-10);
  });

  it('says one of openid and js_code is required, and what minimum lengths joi holds strings to', () => {
    const { schemas } = doc.components;
    for (const name of ['loginBody', 'loginByOpenidBody']) {
      expect(schemas[name].anyOf, name).to.deep.equal([{ required: ['openid'] }, { required: ['js_code'] }]);
      expect(schemas[name].description, name).to.include('TRUSTED_OPENID_HEADER');
    }
    // joi refuses '' for a string unless it allows it: session's token, for one.
    expect(schemas.sessionBody.properties.token).to.include({ minLength: 1, maxLength: 256 });
    // joi takes only http(s) URLs with an authority.
    expect(new RegExp(schemas.loginBody.properties.avatar.pattern).test('ftp://e.com/a.png')).to.equal(false);
    expect(new RegExp(schemas.loginBody.properties.avatar.pattern).test('https://e.com/a.png')).to.equal(true);
    // The rules no schema can say are said in words: __proto__, and one file part.
    expect(doc.paths['/service/user/get'].post.requestBody.description).to.include('`__proto__`');
    expect(doc.paths['/service/user/avatar'].post.requestBody.description).to.include('A second file part');
  });

  it('describes request fields from the joi schemas, with code-point lengths', async () => {
    const { schemas } = doc.components;
    // openid is one way to say who logs in, beside js_code and the gateway: not required as such.
    expect(schemas.loginBody.required).to.deep.equal(['nick_name', 'avatar', 'gender', 'phone']);
    expect(schemas.loginBody.properties.openid).to.include({ type: 'string', minLength: 1, maxLength: 64 });
    expect(schemas.loginBody.properties.gender).to.include({ type: 'integer' });
    expect(schemas.loginBody.properties.gender.enum).to.deep.equal([0, 1]);
    expect(schemas.loginBody.properties.avatar).to.include({ format: 'uri', maxLength: 512 });
    expect(schemas.updateBody.properties.update.anyOf).to.have.length(2);
    expect(schemas.User.required).to.include.members(['user_id', 'openid', 'ctime', 'mtime']);
    // The pattern in the document refuses what joi refuses.
    const openidPattern = new RegExp(schemas.loginBody.properties.openid.pattern);
    for (const bad of ['a b', 'a\u0000b', 'a\u0085b', 'a\ufffdb'])
      expect(openidPattern.test(bad), JSON.stringify(bad)).to.equal(false);
    expect(openidPattern.test('oAbC-1_2')).to.equal(true);
  });

  it("matches real answers: each route's success data fits its declared output", async () => {
    const openid = newOpenid();
    const profile = { openid, nick_name: '小明🎉', avatar: 'https://e.com/a.png', gender: 1, phone: '123' };
    wechat.on('doc-code', { body: { openid, session_key: 'sk', unionid: 'u1' } });
    const answers: Record<string, unknown> = {};
    const login = await svc.call('login', profile);
    answers.login = login.body.data;
    answers.getOpenid = (await svc.call('getOpenid', { js_code: 'doc-code' })).body.data;
    answers.loginByOpenid = (await svc.call('loginByOpenid', { openid })).body.data;
    answers.get = (await svc.call('get', { openid })).body.data;
    answers.update = (await svc.call('update', { user_id: login.body.data.user_id, update: { phone: '9' } })).body.data;
    answers.logout = (await svc.call('logout', { openid })).body.data;
    for (const name of ROUTES) {
      const output = specs.get(name)!.output!;
      expect(output, name).to.not.equal(undefined);
      const { error } = output.validate(answers[name], { convert: false, presence: 'optional' });
      expect(error?.message, name).to.equal(undefined);
    }
  });

  it("documents WeChat's flows: bindPhone's JSON body, avatar's multipart file, the session both need", () => {
    const bind = doc.paths['/service/user/bindPhone'].post;
    expect(bind.operationId).to.equal('bindPhone');
    expect(bind['x-codes'].map((c: { code: number }) => c.code)).to.deep.equal([0, -1, -2, -3, -4, -10]);
    expect(bind.security).to.deep.equal([{ session: [] }]);
    expect(doc.components.schemas.bindPhoneBody.required).to.deep.equal(['code']);
    expect(bind['x-codes'].find((c: { code: number }) => c.code === -10).meaning).to.include('every AUTH_MODE');

    const avatar = doc.paths['/service/user/avatar'].post;
    expect(Object.keys(avatar.requestBody.content)).to.deep.equal(['multipart/form-data']);
    const form = avatar.requestBody.content['multipart/form-data'].schema;
    expect(form.required).to.deep.equal(['file']);
    expect(form.properties.file).to.include({ type: 'string', format: 'binary' });
    expect(form.properties.file.description).to.include(String(2 * 1024 * 1024));
    expect(avatar.responses['413'].description).to.include('AVATAR_MAX_BYTES');
    expect(avatar.security).to.deep.equal([{ session: [] }]);
    expect(avatar['x-codes'].map((c: { code: number }) => c.code)).to.deep.equal([0, -1, -3, -4, -10]);
    const [success] = avatar.responses['200'].content['application/json'].schema.oneOf;
    expect(success.properties.data).to.deep.equal({ $ref: '#/components/schemas/User' });
    expect(doc.components.securitySchemes.session).to.include({ type: 'http', scheme: 'bearer' });

    const media = doc.paths['/media/avatar/{name}'].get;
    expect(Object.keys(media.responses['200'].content)).to.deep.equal(['image/jpeg', 'image/png', 'image/webp']);
    expect(new RegExp(media.parameters[0].schema.pattern).test('1_20200401184953.jpg')).to.equal(true);
    expect(new RegExp(media.parameters[0].schema.pattern).test('../x.jpg')).to.equal(false);
  });

  it('lists the operations endpoints too, those of the ops listener with it as their server', () => {
    for (const path of ['/healthz', '/readyz', '/metrics', '/openapi.json', '/docs', '/docs/{asset}']) {
      expect(doc.paths[path]?.get, path).to.be.an('object');
    }
    for (const path of ['/readyz', '/metrics', '/openapi.json', '/docs', '/docs/{asset}']) {
      const [server] = doc.paths[path].servers;
      expect(server.url, path).to.equal('http://{host}:{opsPort}');
      expect(server.description, path).to.include('OPS_PORT');
    }
    // Both listeners answer these: the document's own address serves them.
    for (const path of ['/healthz', '/media/avatar/{name}', '/service/user/get']) {
      expect(doc.paths[path].servers, path).to.equal(undefined);
    }
    expect(doc.components.responses.MethodNotAllowed.headers.Allow).to.be.an('object');
    expect(doc.info.description).to.include('405 with `Allow`');
  });

  describe('the joi converter', () => {
    it('converts the joi features the routes use', () => {
      const schema = Joi.object({
        s: Joi.string().min(2).max(5).pattern(/^a+$/).required().description('d').example('aa'),
        n: Joi.number().integer().min(1).max(9),
        f: Joi.number(),
        e: Joi.number().valid(0, 1),
        nul: Joi.string().allow(null),
        empty: Joi.string().allow(''),
        arr: Joi.array().items(Joi.string()).max(3),
        alt: Joi.alternatives(Joi.string(), Joi.number()),
        meta: Joi.string()
          .max(10)
          .meta({ openapi: { maxLength: 5 } }),
        uri: Joi.string().uri({ scheme: ['https'] }),
        only: Joi.valid(null),
      });
      expect(toOpenApiSchema(schema, { allowUnknown: false })).to.deep.equal({
        type: 'object',
        properties: {
          s: { type: 'string', minLength: 2, maxLength: 5, pattern: '^a+$', description: 'd', example: 'aa' },
          n: { type: 'integer', minimum: 1, maximum: 9 },
          f: { type: 'number' },
          e: { type: 'number', enum: [0, 1] },
          // joi refuses '' unless allowed; a pattern that cannot match '' says so already.
          nul: { type: 'string', minLength: 1, nullable: true },
          empty: { type: 'string' },
          arr: { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 3 },
          alt: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'number' }] },
          meta: { type: 'string', minLength: 1, maxLength: 5 },
          uri: { type: 'string', format: 'uri', pattern: '^(?:https)://' },
          only: { type: 'object', nullable: true, enum: [null] },
        },
        required: ['s'],
        additionalProperties: false,
      });
      expect(toOpenApiSchema(Joi.object({ a: Joi.string() }), { allowUnknown: true })).to.not.have.property(
        'additionalProperties',
      );
    });

    it('refuses what it cannot say rather than document it wrong', () => {
      expect(() => toOpenApiSchema(Joi.object({ d: Joi.date() }), { allowUnknown: false })).to.throw(/date/);
      expect(() => toOpenApiSchema(Joi.string().email(), { allowUnknown: false })).to.throw(/string\.email/);
      expect(() => toOpenApiSchema(Joi.string().pattern(/a/i), { allowUnknown: false })).to.throw(/flags/);
      expect(() => toOpenApiSchema(Joi.number().allow('x'), { allowUnknown: false })).to.throw(/allow/);
    });
  });
});
