import type Joi from 'joi';
import { FAILURE_MEANINGS, FAILURE_MEANINGS_ZH, OTHER_FAILURE_MEANING, type FailureKind } from '../errors';
import { IDENTITY_FIELDS } from './identity';
import { COMMON_CODES, type CommonCode, type RouteSpec } from './route';

/** An OpenAPI 3.0 Schema Object (the subset this converter writes). */
export type SchemaObject = Record<string, unknown>;

type Description = Joi.Description & {
  flags?: Record<string, unknown>;
  keys?: Record<string, Description>;
  rules?: { name: string; args?: Record<string, unknown> }[];
  allow?: unknown[];
  invalid?: unknown[];
  matches?: { schema: Description }[];
  items?: Description[];
  examples?: unknown[];
  metas?: Record<string, unknown>[];
};

interface ConvertOptions {
  /**
   * Whether an object without an explicit .unknown() accepts other keys: true for request
   * bodies (the router validates with allowUnknown and strips them), false for answers.
   */
  allowUnknown: boolean;
  /** Where schemas named with `.meta({ component: 'Name' })` go; without it they stay inline. */
  components?: Record<string, SchemaObject>;
}

/**
 * joi -> OpenAPI 3.0 schema, from joi's own describe() tree, for the joi features this service
 * uses. Anything else throws, so a schema can never silently drift from its document.
 *
 * Meta conventions say what joi cannot: `.meta({ openapi: {...} })` adds JSON Schema keywords
 * (e.g. a maxLength in code points where joi checks UTF-16 units); `.meta({ documentAs: schema })`
 * documents a deliberately loose field as what clients should send (`update` accepts anything
 * so that parsePatch can answer -3 or -4); `.meta({ component: 'User' })` names a schema
 * shared by several routes, written once under components/schemas.
 */
export function toOpenApiSchema(schema: Joi.Schema, options: ConvertOptions): SchemaObject {
  return convert(schema.describe() as Description, options);
}

function convert(d: Description, options: ConvertOptions): SchemaObject {
  const metas: Record<string, unknown> = Object.assign({}, ...(d.metas ?? []));
  const component = metas.component;
  if (typeof component === 'string' && options.components) {
    const { component: _, ...rest } = metas;
    const schema = convert({ ...d, metas: [rest] }, options);
    const known = options.components[component];
    if (known && JSON.stringify(known) !== JSON.stringify(schema)) {
      throw new Error(`openapi: two different schemas are both named ${component}`);
    }
    options.components[component] = schema;
    return { $ref: `#/components/schemas/${component}` };
  }
  if (metas.documentAs) return withCommon(convert(metas.documentAs as Description, options), d, metas);

  const out: SchemaObject = {};
  const flags = d.flags ?? {};
  switch (d.type) {
    case 'object': {
      out.type = 'object';
      if (d.keys) {
        const properties: Record<string, SchemaObject> = {};
        const required: string[] = [];
        for (const [key, child] of Object.entries(d.keys)) {
          properties[key] = convert(child, options);
          if (child.flags?.presence === 'required') required.push(key);
        }
        out.properties = properties;
        if (required.length) out.required = required;
      }
      const unknown = flags.unknown as boolean | undefined;
      if (unknown === false || (unknown === undefined && d.keys && !options.allowUnknown)) {
        out.additionalProperties = false;
      }
      break;
    }
    case 'string':
      out.type = 'string';
      break;
    case 'number':
      out.type = d.rules?.some((r) => r.name === 'integer') ? 'integer' : 'number';
      break;
    case 'boolean':
      out.type = 'boolean';
      break;
    case 'array':
      out.type = 'array';
      out.items = d.items?.length === 1 ? convert(d.items[0], options) : {};
      break;
    case 'alternatives':
      out.anyOf = (d.matches ?? []).map((m) => {
        if (!m.schema) throw new Error('openapi: only alternatives of plain schemas are supported');
        return convert(m.schema, options);
      });
      break;
    case 'any':
      break;
    default:
      throw new Error(`openapi: no conversion for joi type "${d.type}"`);
  }

  for (const rule of d.rules ?? []) applyRule(out, d.type, rule);

  // joi refuses an empty string unless it is allowed: the document says so.
  if (d.type === 'string' && out.minLength === undefined && !flags.only && matchesEmpty(out.pattern)) {
    out.minLength = 1;
  }
  const allowed = (d.allow ?? []).filter((v) => v !== null);
  if (d.allow?.includes(null)) out.nullable = true;
  // OpenAPI 3.0's `nullable` needs a type beside it: null alone is written as a nullable object.
  if (out.nullable && out.type === undefined && flags.only && allowed.length === 0) out.type = 'object';
  if (flags.only) out.enum = d.allow ?? [];
  else if (allowed.length && d.type === 'string' && allowed.every((v) => v === '')) {
    delete out.minLength;
    // A pattern or a format that refuses '' (a cleared nickname or avatar): '' is one more choice.
    const { nullable, ...value } = { ...out, ...(metas.openapi as SchemaObject | undefined) };
    if (!matchesEmpty(value.pattern) || value.format !== undefined) {
      const { openapi: _, ...rest } = metas;
      const choices = { anyOf: [value, { type: 'string', enum: [''] }], ...(nullable ? { nullable } : {}) };
      return withCommon(choices, d, rest);
    }
  } else if (allowed.length) throw new Error(`openapi: .allow(${JSON.stringify(allowed)}) is not supported`);

  return withCommon(out, d, metas);
}

/** Whether a JSON Schema pattern (or none) lets '' through: else it says "not empty" already. */
function matchesEmpty(pattern: unknown): boolean {
  return typeof pattern !== 'string' || new RegExp(pattern, 'u').test('');
}

function applyRule(out: SchemaObject, type: string, rule: { name: string; args?: Record<string, unknown> }): void {
  const limit = rule.args?.limit;
  const key = `${type}.${rule.name}`;
  switch (key) {
    case 'string.min':
      out.minLength = limit;
      return;
    case 'string.max':
      out.maxLength = limit;
      return;
    case 'string.uri': {
      out.format = 'uri';
      // joi takes only the listed schemes (case-sensitive), and an authority after them.
      const schemes = (rule.args?.options as { scheme?: string[] } | undefined)?.scheme;
      if (schemes) {
        if (out.pattern) throw new Error('openapi: a uri rule beside a pattern');
        out.pattern = `^(?:${schemes.join('|')})://`;
      }
      return;
    }
    case 'string.pattern': {
      const regex = String(rule.args?.regex);
      const match = /^\/(.*)\/([a-z]*)$/s.exec(regex);
      if (!match || match[2]) throw new Error(`openapi: pattern ${regex} has flags or is not a regex`);
      out.pattern = match[1];
      return;
    }
    case 'number.integer':
      return; // the type says it
    case 'number.min':
    case 'object.min':
    case 'array.min':
      out[type === 'number' ? 'minimum' : type === 'object' ? 'minProperties' : 'minItems'] = limit;
      return;
    case 'number.max':
    case 'array.max':
      out[type === 'number' ? 'maximum' : 'maxItems'] = limit;
      return;
    case 'array.length':
      out.minItems = limit;
      out.maxItems = limit;
      return;
    // A custom rule is code; what it checks is documented by the schema's description and
    // `openapi` meta (see text() in users/schemas.ts).
    case 'string.custom':
      return;
    default:
      throw new Error(`openapi: no conversion for joi rule ${key}`);
  }
}

function withCommon(out: SchemaObject, d: Description, metas: Record<string, unknown>): SchemaObject {
  const flags = d.flags ?? {};
  if (typeof flags.description === 'string') out.description = flags.description;
  if (d.examples?.length) out.example = d.examples[0];
  if (metas.openapi) Object.assign(out, metas.openapi);
  return out;
}

// --- the document --------------------------------------------------------------------------

export interface OpenApiInfo {
  title: string;
  version: string;
  description: string;
  /** Where the routes are mounted, e.g. /service/user. */
  prefix: string;
  /** The operations listener's port (OPS_PORT) as configured: the default of its server variable. */
  opsPort: number;
  /** The files the console serves under /docs/ (src/ops/docs.ts). */
  docsAssets: readonly string[];
  /** Whether /wechat/push is mounted (WECHAT_PUSH_TOKEN set). */
  push?: boolean;
}

/** HTTP answers outside the document's codes that any route may give (see http/envelope.ts). */
const COMMON_HTTP_ANSWERS: Record<string, { description: string; code: number }> = {
  '413': { description: 'The body is larger than BODY_LIMIT (after decompression)', code: 413 },
  '415': { description: 'A Content-Encoding other than identity, gzip or deflate', code: 415 },
  '503': { description: 'The process has MAX_INFLIGHT requests in flight: retry after Retry-After seconds', code: 503 },
};

/** The common codes (http/route.ts), with their kinds. */
export function commonCodes(): [FailureKind, CommonCode][] {
  return Object.entries(COMMON_CODES) as [FailureKind, CommonCode][];
}

/** One line per document code of a route: the failures it stands for (`other`: any it does not name). */
export function codeKinds(route: RouteSpec): { code: number; kinds: (FailureKind | 'other')[] }[] {
  const byCode = new Map<number, (FailureKind | 'other')[]>();
  const add = (code: number, kind: FailureKind | 'other') => byCode.set(code, [...(byCode.get(code) ?? []), kind]);
  for (const [kind, code] of Object.entries(route.codes) as [FailureKind | 'other', number][]) {
    if (kind !== 'other') add(code, kind);
  }
  // What the guards may answer on this route (http/route.ts), unless its own table names the
  // kind; HTTP answers (429) are listed as statuses by operation().
  for (const [kind, common] of commonCodes()) {
    if (common.code < 0 && common.on(route) && route.codes[kind] === undefined) add(common.code, kind);
  }
  add(route.codes.other, 'other');
  return [...byCode.entries()].sort(([a], [b]) => b - a).map(([code, kinds]) => ({ code, kinds }));
}

/** One line per document code of a route: what it means. */
export function codeTable(route: RouteSpec): { code: number; meaning: string }[] {
  return codeKinds(route).map(({ code, kinds }) => ({
    code,
    meaning: kinds
      .map((kind) =>
        kind === 'other'
          ? OTHER_FAILURE_MEANING.en
          : kind === 'unauthenticated'
            ? unauthenticatedMeaning(route).en
            : FAILURE_MEANINGS[kind],
      )
      .join('; '),
  }));
}

/** What -10 means on a route: which guard answers it there, and when. */
export function unauthenticatedMeaning(route: RouteSpec): { en: string; zh: string } {
  if (route.session === 'required') {
    return {
      en: 'no valid session token (Authorization: Bearer <token>, or a `token` field): required in every AUTH_MODE',
      zh: '没有有效的会话 token（Authorization: Bearer <token> 或 token 字段）：任何模式下都需要',
    };
  }
  if (route.identifies) {
    return {
      en:
        'the js_code, session token or gateway header proves another openid than the body names; in strict mode ' +
        '(AUTH_MODE=token) also an openid with no proof, or an invalid or expired token',
      zh: 'js_code、会话 token 或网关请求头证明的 openid 与请求体中的不同；严格模式（AUTH_MODE=token）下仅有 openid 而无凭证、或 token 无效或过期时也返回此码',
    };
  }
  return { en: FAILURE_MEANINGS.unauthenticated, zh: FAILURE_MEANINGS_ZH.unauthenticated };
}

const envelopeOf = (code: SchemaObject, msg: SchemaObject, data: SchemaObject): SchemaObject => ({
  type: 'object',
  required: ['code', 'msg', 'data'],
  properties: { code, msg, data },
  additionalProperties: false,
});

const failureEnvelope = (codes: number[]): SchemaObject =>
  envelopeOf(
    { type: 'integer', enum: codes },
    { type: 'string', description: 'what went wrong, for a developer' },
    { type: 'object', nullable: true, enum: [null], description: 'always null on a failure' },
  );

/** A multipart route's body: the file field, as wx.uploadFile sends it. */
function multipartBody(multipart: NonNullable<RouteSpec['multipart']>): SchemaObject {
  return {
    required: true,
    description: `One file part, \`${multipart.file}\`, at most ${multipart.maxBytes} bytes (AVATAR_MAX_BYTES; one byte more is HTTP 413). A second file part, or none, is -1.`,
    content: {
      'multipart/form-data': {
        schema: {
          type: 'object',
          required: [multipart.file],
          properties: {
            [multipart.file]: {
              type: 'string',
              format: 'binary',
              description: `${multipart.description}; at most ${multipart.maxBytes} bytes; exactly one file part`,
            },
          },
        },
      },
    },
  };
}

/** What every JSON or form body is held to beyond its schema (http/body.ts, http/router.ts). */
export const BODY_RULES =
  'A JSON body is an object. A key `__proto__` anywhere in it, even inside a field that is otherwise ignored, ' +
  'makes the body malformed (-1). Fields not listed are ignored. A number may also come as a string holding ' +
  'it (as every field of a form does).';

function jsonBody(route: RouteSpec, components: Record<string, SchemaObject>): SchemaObject {
  const bodyName = `${route.name}Body`;
  const schema = toOpenApiSchema(route.input, { allowUnknown: true, components });
  if (route.identifies) {
    // The identity guard (http/identity.ts) needs one of these unless a header proves the caller.
    const fields = IDENTITY_FIELDS.map((field) => `\`${field}\``).join(' or ');
    schema.anyOf = IDENTITY_FIELDS.map((field) => ({ required: [field] }));
    schema.description =
      `${fields} is required (-1 without either in openid mode, -10 in strict mode), unless the trusted ` +
      "gateway's header (TRUSTED_OPENID_HEADER) or, in strict mode, a session token names the caller.";
  }
  components[bodyName] = schema;
  const input = { $ref: `#/components/schemas/${bodyName}` };
  return {
    required: true,
    description: BODY_RULES,
    content: {
      'application/json': { schema: input },
      // A form carries the same fields; numbers may come as digit strings.
      'application/x-www-form-urlencoded': { schema: input },
    },
  };
}

function operation(route: RouteSpec, components: Record<string, SchemaObject>): SchemaObject {
  const data = route.output
    ? toOpenApiSchema(route.output, { allowUnknown: false, components })
    : { description: 'not documented' };
  const codes = codeTable(route);
  const table = [
    '| code | meaning |',
    '| --- | --- |',
    '| 0 | success |',
    ...codes.map((c) => `| ${c.code} | ${c.meaning} |`),
  ];
  const responses: Record<string, unknown> = {
    '200': {
      description: 'Every document answer is HTTP 200: code 0 with `data`, or one of the codes above with `data` null',
      content: {
        'application/json': {
          schema: {
            oneOf: [
              {
                title: 'success',
                ...envelopeOf({ type: 'integer', enum: [0] }, { type: 'string', enum: ['success'] }, data),
              },
              { title: 'failure', ...failureEnvelope(codes.map((c) => c.code)) },
            ],
          },
        },
      },
    },
  };
  const httpAnswers = { ...COMMON_HTTP_ANSWERS };
  if (route.multipart) {
    httpAnswers['408'] = {
      description: 'The body arrived slower than AVATAR_UPLOAD_MIN_BYTES_PER_S (or stalled); the connection is closed',
      code: 408,
    };
    httpAnswers['413'] = {
      description: `The file is larger than ${route.multipart.maxBytes} bytes (AVATAR_MAX_BYTES)`,
      code: 413,
    };
    httpAnswers['503'] = {
      description: `${COMMON_HTTP_ANSWERS['503']!.description}; or AVATAR_UPLOADS_MAX uploads are being read`,
      code: 503,
    };
  }
  for (const [kind, common] of commonCodes()) {
    if (common.code >= 100 && common.on(route)) {
      httpAnswers[String(common.code)] = { description: FAILURE_MEANINGS[kind], code: common.code };
    }
  }
  for (const [status, answer] of Object.entries(httpAnswers)) {
    responses[status] = {
      description: answer.description,
      content: { 'application/json': { schema: failureEnvelope([answer.code]) } },
    };
  }
  return {
    operationId: route.name,
    tags: ['users'],
    summary: route.summary,
    description: `Codes of this route:\n\n${table.join('\n')}`,
    ...(route.session === 'required' ? { security: [{ session: [] }] } : {}),
    requestBody: route.multipart ? multipartBody(route.multipart) : jsonBody(route, components),
    responses,
    'x-codes': [{ code: 0, meaning: 'success' }, ...codes],
  };
}

const json = (schema: SchemaObject) => ({ 'application/json': { schema } });

const CHECK: SchemaObject = {
  type: 'object',
  required: ['ok', 'ms'],
  properties: { ok: { type: 'boolean' }, ms: { type: 'integer' }, error: { type: 'string' } },
};

/**
 * The operations listener (OPS_PORT): the paths only it serves name it as their server, so that a
 * client reading this document against the API address does not look for them there (404).
 */
function opsServers(opsPort: number): SchemaObject[] {
  return [
    {
      url: 'http://{host}:{opsPort}',
      description: 'The operations listener (OPS_PORT): keep it private; the API port answers these paths 404',
      variables: {
        host: { default: 'localhost', description: "the service's host" },
        opsPort: { default: String(opsPort), description: 'OPS_PORT' },
      },
    },
  ];
}

/** The operations endpoints (src/ops/routes.ts, src/ops/docs.ts), which no joi schema describes. */
const opsPaths = (opsPort: number, docsAssets: readonly string[]): Record<string, unknown> => ({
  '/healthz': {
    get: {
      operationId: 'healthz',
      tags: ['operations'],
      summary: 'Liveness: the process runs (checks nothing else)',
      responses: {
        '200': {
          description: 'alive',
          content: json({ type: 'object', properties: { status: { type: 'string', enum: ['ok'] } } }),
        },
      },
    },
  },
  '/readyz': {
    servers: opsServers(opsPort),
    get: {
      operationId: 'readyz',
      tags: ['operations'],
      summary: 'Readiness: MySQL and Redis answer (503 naming the one that does not, or while shutting down)',
      responses: Object.fromEntries(
        ['200', '503'].map((status) => [
          status,
          {
            description: status === '200' ? 'ready' : 'not ready, or draining',
            content: json({
              type: 'object',
              properties: {
                status: { type: 'string', enum: ['ready', 'not ready', 'draining'] },
                checks: { type: 'object', properties: { mysql: CHECK, redis: CHECK } },
              },
            }),
          },
        ]),
      ),
    },
  },
  '/openapi.json': {
    servers: opsServers(opsPort),
    get: {
      operationId: 'openapi',
      tags: ['operations'],
      summary: 'This document',
      responses: { '200': { description: 'OpenAPI 3.0', content: json({ type: 'object' }) } },
    },
  },
  '/metrics': {
    servers: opsServers(opsPort),
    get: {
      operationId: 'metrics',
      tags: ['operations'],
      summary: 'Prometheus metrics (text exposition format)',
      responses: { '200': { description: 'metrics', content: { 'text/plain': { schema: { type: 'string' } } } } },
    },
  },
  '/docs': {
    servers: opsServers(opsPort),
    get: {
      operationId: 'docs',
      tags: ['operations'],
      summary: 'A Swagger UI console over this document; its "try it out" calls the API through this listener',
      responses: { '200': { description: 'the page', content: { 'text/html': { schema: { type: 'string' } } } } },
    },
  },
  '/docs/{asset}': {
    servers: opsServers(opsPort),
    get: {
      operationId: 'docsAsset',
      tags: ['operations'],
      summary: "The console's scripts, style sheet and icon, served from the service itself",
      // Any name is this path (405 for another method); only the files listed are 200.
      parameters: [
        {
          name: 'asset',
          in: 'path',
          required: true,
          description: `one of ${docsAssets.join(', ')}`,
          schema: { type: 'string', example: docsAssets[0] },
        },
      ],
      responses: {
        '200': { description: 'the file', content: { '*/*': { schema: { type: 'string', format: 'binary' } } } },
        '404': {
          description: 'not one of the listed files',
          content: { 'text/plain': { schema: { type: 'string' } } },
        },
      },
    },
  },
});

/**
 * What a listener answers outside the operations listed (http/router.ts, refuseUnrouted): the
 * same for every method, the uncommon ones included, and never a 5xx.
 */
const ANY_PATH =
  'A path not listed here is 404; a method a listed path does not take (any method: PUT, TRACE, OPTIONS, ' +
  'QUERY, PROPFIND...) is 405 with `Allow` naming the ones it takes (a GET path takes HEAD too). Both answer ' +
  'in the envelope (`NotFound`, `MethodNotAllowed` under components/responses). Requests that are not HTTP ' +
  "Node's parser accepts (an unknown method, headers over HTTP_MAX_HEADER_SIZE) get 400 or 431 from Node, " +
  'without a body, and the connection is closed.';

export const ANY_PATH_RESPONSES: Record<'NotFound' | 'MethodNotAllowed', SchemaObject> = {
  NotFound: {
    description: 'No such path (on this listener)',
    content: json(failureEnvelope([404])),
  },
  MethodNotAllowed: {
    description: 'The path does not take this method; `Allow` names the ones it takes',
    headers: { Allow: { schema: { type: 'string' }, description: 'e.g. `POST`, or `GET, HEAD`' } },
    content: json(failureEnvelope([405])),
  },
};

/** Uploaded media (src/media/serve.ts). */
const MEDIA_PATHS: Record<string, unknown> = {
  '/media/avatar/{name}': {
    get: {
      operationId: 'avatarFile',
      tags: ['media'],
      summary: 'An uploaded avatar (the URL the avatar route stores); immutable, cached for a year',
      parameters: [
        {
          name: 'name',
          in: 'path',
          required: true,
          description: '<user_id>_<YYYYMMDDHHmmss>[_<12 hex>].<jpg|png|webp>',
          schema: { type: 'string', pattern: '^[0-9]{1,16}_[0-9]{14}(?:_[0-9a-f]{12})?\\.(jpg|png|webp)$' },
          example: '1_20200401184953.jpg',
        },
      ],
      responses: {
        '200': {
          description: 'the image (X-Content-Type-Options: nosniff, Cache-Control: immutable)',
          content: Object.fromEntries(
            ['image/jpeg', 'image/png', 'image/webp'].map((t) => [t, { schema: { type: 'string', format: 'binary' } }]),
          ),
        },
        '404': { description: 'no such file, or not a media path', content: json(failureEnvelope([404])) },
      },
    },
  },
};

/** WeChat's message push (src/wechat/push/receiver.ts): mounted only while WECHAT_PUSH_TOKEN is set. */
const PUSH_PATHS: Record<string, unknown> = (() => {
  const plain = (description: string) => ({
    description,
    content: { 'text/plain': { schema: { type: 'string' } } },
  });
  const refusals = {
    '400': plain('a malformed message or query'),
    '401': plain('a signature that does not match, or a timestamp too far off'),
    '405': plain('a method other than GET and POST (Allow: GET, POST)'),
    '413': plain('a body over 64 KiB'),
    '415': plain('a body that is neither JSON nor XML'),
  };
  const query = ['signature', 'timestamp', 'nonce'].map((name) => ({
    name,
    in: 'query',
    required: true,
    schema: { type: 'string' },
  }));
  return {
    '/wechat/push': {
      get: {
        operationId: 'wechatPushVerify',
        tags: ['wechat'],
        summary: "WeChat's URL check when the push URL is saved: answers echostr once the signature matches",
        parameters: [...query, { name: 'echostr', in: 'query', required: true, schema: { type: 'string' } }],
        responses: { '200': plain('echostr, as sent'), ...refusals },
      },
      post: {
        operationId: 'wechatPush',
        tags: ['wechat'],
        summary:
          "WeChat's message push (signed by WECHAT_PUSH_TOKEN, plain or AES): authorization events and the " +
          'content check verdicts (wxa_media_check)',
        parameters: query,
        responses: {
          '200': plain('`success` once the event has been acted on'),
          ...refusals,
          '503': plain('the change could not be made now; WeChat pushes again'),
        },
      },
    },
  };
})();

/** The OpenAPI 3.0 document of the mounted routes, generated from their specs. */
export function buildOpenApi(routes: RouteSpec[], info: OpenApiInfo): SchemaObject {
  const paths: Record<string, unknown> = {};
  const schemas: Record<string, SchemaObject> = {};
  for (const route of routes) paths[`${info.prefix}/${route.name}`] = { post: operation(route, schemas) };
  Object.assign(paths, MEDIA_PATHS, info.push ? PUSH_PATHS : {}, opsPaths(info.opsPort, info.docsAssets));
  const securitySchemes = routes.some((r) => r.session === 'required')
    ? { session: { type: 'http', scheme: 'bearer', description: 'The token a login answer carries' } }
    : undefined;
  return {
    openapi: '3.0.3',
    info: { title: info.title, version: info.version, description: `${info.description}\n\n${ANY_PATH}` },
    tags: [
      { name: 'users', description: 'The routes of the API document (user-api.zh.md)' },
      { name: 'media', description: 'Files uploaded through the API' },
      ...(info.push ? [{ name: 'wechat', description: "WeChat's message push" }] : []),
      { name: 'operations', description: 'Probes and metrics for operators' },
    ],
    paths,
    components: { schemas, responses: ANY_PATH_RESPONSES, ...(securitySchemes ? { securitySchemes } : {}) },
  };
}
