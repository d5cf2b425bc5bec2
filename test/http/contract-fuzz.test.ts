import { expect } from 'chai';
import fc from 'fast-check';
import sharp from 'sharp';
import { apiDocument } from '../../src/http/api-reference';
import { contractAt, type Contract, type OpenApiDocument } from '../helpers/contract';
import { newOpenid } from '../helpers/env';
import { FakeWechat } from '../helpers/fake-wechat';
import { arbitraryOf, mutationsOf, resolve } from '../helpers/schema-arbitrary';
import { startService, type TestService } from '../helpers/service';

/**
 * Bodies generated from the served /openapi.json itself (fast-check), valid and invalid, sent to
 * every POST route it lists, in both AUTH_MODEs. Two properties: every answer is one the
 * document allows (the harness in helpers/contract.ts checks it too, on every request of the
 * suite), and no body the document calls invalid is answered 0.
 *
 * CONTRACT_FUZZ_RUNS (default 20) examples per route, mode and kind; CONTRACT_FUZZ_SEED (default
 * 26) picks them, so a run is repeatable. A larger run, this file alone:
 *   CONTRACT_FUZZ_RUNS=500 CONTRACT_FUZZ_SEED=$RANDOM npm run fuzz
 * A failure prints its seed and path, to replay it.
 */
const RUNS = Number(process.env.CONTRACT_FUZZ_RUNS ?? 20);
const SEED = Number(process.env.CONTRACT_FUZZ_SEED ?? 26);
/** CONTRACT_FUZZ_TALLY=1 prints how often each route answered each code (what the run reached). */
const tally = new Map<string, number>();

type Body = Record<string, unknown>;
interface Op {
  requestBody: { content: Record<string, { schema: Record<string, unknown> }> };
}

/**
 * The POST routes of a document whose bodies are JSON or a multipart form, with their schema
 * (a body of another type would need a generator of its own).
 */
interface PostRoute {
  path: string;
  multipart: boolean;
  schema: Record<string, unknown>;
}

function postRoutes(doc: OpenApiDocument): PostRoute[] {
  return Object.entries(doc.paths).flatMap(([path, item]): PostRoute[] => {
    const content = (item.post as unknown as Op | undefined)?.requestBody?.content ?? {};
    const json = content['application/json'];
    const form = content['multipart/form-data'];
    if (json) return [{ path, multipart: false, schema: json.schema }];
    return form ? [{ path, multipart: true, schema: form.schema }] : [];
  });
}

/** The form's file field: the binary property it requires. */
function fileField(schema: Record<string, unknown>): string {
  const s = schema as { required?: string[]; properties?: Record<string, { format?: string }> };
  const field = (s.required ?? []).find((name) => s.properties?.[name]?.format === 'binary');
  if (!field) throw new Error('a multipart body without a required binary field');
  return field;
}

/**
 * A body whose anyOf only names fields that must be present (openid or js_code) has an escape
 * the schema cannot say: a header (a session token, the gateway's) names the caller instead. No
 * token is sent there, so the body alone decides.
 */
function identifiesByBody(doc: OpenApiDocument, schema: Record<string, unknown>): boolean {
  const s = resolve(doc, schema) as { anyOf?: { required?: string[]; type?: string }[] };
  return Boolean(s.anyOf?.every((alt) => alt.required && !alt.type));
}

/** Known good values, so that generated bodies also reach the handlers' success paths. */
interface Known {
  openid: string;
  user_id: number;
  token: string;
  js_code: string;
}

function withKnown(body: unknown, known: Partial<Known>, pick: boolean[]): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const out: Body = { ...(body as Body) };
  (['openid', 'user_id', 'token', 'js_code'] as const).forEach((key, i) => {
    if (key in out && pick[i] && known[key] !== undefined) out[key] = known[key];
  });
  return out;
}

async function send(
  svc: TestService,
  path: string,
  init: { body: string | FormData; json: boolean; token?: string },
): Promise<{ status: number; code: unknown; text: string }> {
  const headers: Record<string, string> = init.json ? { 'content-type': 'application/json' } : {};
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  // The fetch is held to the document by the harness (helpers/contract.ts) before it returns.
  const res = await fetch(`${svc.url}${path}`, { method: 'POST', headers, body: init.body });
  const text = await res.text();
  let code: unknown;
  try {
    code = (JSON.parse(text) as { code?: unknown }).code;
  } catch {
    code = undefined;
  }
  const key = `${path} ${String(code)}`;
  tally.set(key, (tally.get(key) ?? 0) + 1);
  return { status: res.status, code, text };
}

describe('the OpenAPI document against bodies generated from it (fast-check)', function () {
  this.timeout(120_000);
  const routes = postRoutes(apiDocument() as unknown as OpenApiDocument);
  let png: Buffer;
  let wechat: FakeWechat;

  before(async () => {
    wechat = await new FakeWechat().start();
    png = await sharp({ create: { width: 2, height: 2, channels: 3, background: { r: 1, g: 2, b: 3 } } })
      .png()
      .toBuffer();
  });
  after(() => {
    if (process.env.CONTRACT_FUZZ_TALLY)
      console.log(
        [...tally.entries()]
          .sort()
          .map((e) => e.join(': '))
          .join('\n'),
      );
    return wechat?.stop();
  });

  for (const mode of ['openid', 'token'] as const) {
    describe(`AUTH_MODE=${mode}`, () => {
      let svc: TestService;
      let contract: Contract;
      let doc: OpenApiDocument;
      const openid = newOpenid('fuzz');
      const jsCode = `fuzz-code-${mode}`;
      let userId: number;

      before(async () => {
        svc = await startService({
          AUTH_MODE: mode,
          RATE_LIMIT_IP: 0,
          RATE_LIMIT_OPENID: 0,
          WECHAT_API_BASE: wechat.url,
          WECHAT_APPID: 'wx-fuzz',
          WECHAT_SECRET: 'fuzz-secret',
          WECHAT_TIMEOUT_MS: 500,
        });
        contract = contractAt(svc.url)!;
        doc = contract.doc;
        wechat.on(jsCode, { body: { openid, session_key: 'c2Vzc2lvbi1rZXktMTIzNDU2Nw==' } });
        const login = await svc.call('login', {
          js_code: jsCode,
          nick_name: 'fuzz',
          avatar: 'https://example.com/a.png',
          gender: 1,
          phone: '1',
        });
        expect(login.body.code).to.equal(0);
        userId = login.body.data.user_id;
      });
      after(() => svc?.stop());

      /** A live session of the known user (logout may have ended the last one). */
      async function known(): Promise<Known> {
        const res = await svc.call('getOpenid', { js_code: jsCode });
        expect(res.body.code, res.text).to.equal(0);
        return { openid, user_id: userId, token: res.body.data.token, js_code: jsCode };
      }

      for (const route of routes) {
        it(`${route.path}: every answer is in the document; no invalid body is answered 0`, async () => {
          const current = postRoutes(doc).find((r) => r.path === route.path);
          expect(current, 'the served document lists the route').to.not.equal(undefined);
          const { schema } = current!;
          const key = `request ${route.path}`;
          const isValid = (body: unknown) => contract.validate(key, schema, body).valid;
          const tokenToo = !route.multipart && identifiesByBody(doc, schema) ? false : undefined;

          if (route.multipart) {
            // The file part, as wx.uploadFile sends it: one (valid), none or two (invalid).
            const field = fileField(schema);
            const file = fc.oneof(
              fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
              fc.constant(png),
            );
            await fc.assert(
              fc.asyncProperty(fc.array(file, { maxLength: 2 }), fc.boolean(), async (files, withToken) => {
                const form = new FormData();
                for (const f of files) form.append(field, new Blob([f], { type: 'image/png' }), 'a.png');
                const token = withToken ? (await known()).token : undefined;
                const answer = await send(svc, route.path, { body: form, json: false, token });
                if (files.length !== 1) expect(answer.code, answer.text).to.not.equal(0);
              }),
              { numRuns: RUNS, seed: SEED, endOnFailure: true },
            );
            return;
          }

          const valid = arbitraryOf(doc, schema).filter(isValid);
          const picks = fc.array(fc.boolean(), { minLength: 4, maxLength: 4 });
          // Valid bodies: answered with a code the document lists (0 included).
          await fc.assert(
            fc.asyncProperty(valid, picks, fc.boolean(), async (body, pick, withToken) => {
              const good = await known();
              const sent = withKnown(body, good, pick);
              const token = (tokenToo ?? withToken) ? good.token : undefined;
              await send(svc, route.path, { body: JSON.stringify(sent), json: true, token });
            }),
            { numRuns: RUNS, seed: SEED, endOnFailure: true },
          );
          // Invalid bodies (a mutation the document refuses, or a `__proto__` key): never 0.
          const proto = fc.constant({
            what: 'a __proto__ key',
            apply: (body: Body) => ({ ...body, extra: JSON.parse('{"__proto__": {"x": 1}}') as unknown }),
          });
          // The known user's values go in before the mutation, so that it is the only fault.
          const invalid = fc
            .tuple(valid, fc.oneof(mutationsOf(doc, schema), proto), picks)
            .map(([body, mutation, pick]) => ({
              mutation,
              body: mutation.apply(withKnown(body, { openid, user_id: userId, js_code: jsCode }, pick) as Body),
            }))
            .filter(({ mutation, body }) => mutation.what === 'a __proto__ key' || !isValid(body));
          await fc.assert(
            fc.asyncProperty(invalid, fc.boolean(), async ({ mutation, body }, withToken) => {
              const token = (tokenToo ?? withToken) ? (await known()).token : undefined;
              const answer = await send(svc, route.path, { body: JSON.stringify(body), json: true, token });
              expect(answer.code, `${mutation.what}: ${answer.text}`).to.not.equal(0);
            }),
            { numRuns: RUNS, seed: SEED, endOnFailure: true },
          );
        });
      }
    });
  }
});
