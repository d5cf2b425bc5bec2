import type Joi from 'joi';
import { FAILURE_MEANINGS, OTHER_FAILURE_MEANING, type FailureKind } from '../errors';
import { COMMON_CODES, type RouteSpec } from './route';

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

  const allowed = (d.allow ?? []).filter((v) => v !== null);
  if (d.allow?.includes(null)) out.nullable = true;
  if (flags.only) out.enum = d.allow ?? [];
  else if (allowed.length && d.type === 'string' && allowed.every((v) => v === '')) delete out.minLength;
  else if (allowed.length) throw new Error(`openapi: .allow(${JSON.stringify(allowed)}) is not supported`);

  return withCommon(out, d, metas);
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
    case 'string.uri':
      out.format = 'uri';
      return;
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
}

/** HTTP answers outside the document's codes that any route may give (see http/envelope.ts). */
const COMMON_HTTP_ANSWERS: Record<string, { description: string; code: number }> = {
  '413': { description: 'The body is larger than BODY_LIMIT (after decompression)', code: 413 },
  '415': { description: 'A Content-Encoding other than identity, gzip or deflate', code: 415 },
  '503': { description: 'The process has MAX_INFLIGHT requests in flight: retry after Retry-After seconds', code: 503 },
};

/** One line per document code of a route: the failures it stands for (`other`: any it does not name). */
export function codeKinds(route: RouteSpec): { code: number; kinds: (FailureKind | 'other')[] }[] {
  const byCode = new Map<number, (FailureKind | 'other')[]>();
  const add = (code: number, kind: FailureKind | 'other') => byCode.set(code, [...(byCode.get(code) ?? []), kind]);
  for (const [kind, code] of Object.entries(route.codes) as [FailureKind | 'other', number][]) {
    if (kind !== 'other') add(code, kind);
  }
  // A route with an owner demands a token in strict mode (http/auth.ts), one with
  // `session: 'required'` in every mode.
  if ((route.owner || route.session === 'required') && route.codes.unauthenticated === undefined) {
    add(COMMON_CODES.unauthenticated!, 'unauthenticated');
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
          : kind === 'unauthenticated' && route.session === 'required'
            ? SESSION_REQUIRED
            : FAILURE_MEANINGS[kind],
      )
      .join('; '),
  }));
}

const SESSION_REQUIRED =
  'no valid session token (Authorization: Bearer <token>, or a `token` field): required in every AUTH_MODE';

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
    { nullable: true, enum: [null], description: 'always null on a failure' },
  );

/** A multipart route's body: the file field, as wx.uploadFile sends it. */
function multipartBody(multipart: NonNullable<RouteSpec['multipart']>): SchemaObject {
  return {
    required: true,
    content: {
      'multipart/form-data': {
        schema: {
          type: 'object',
          required: [multipart.file],
          properties: {
            [multipart.file]: {
              type: 'string',
              format: 'binary',
              description: `${multipart.description}; at most ${multipart.maxBytes} bytes`,
            },
          },
        },
      },
    },
  };
}

function jsonBody(route: RouteSpec, components: Record<string, SchemaObject>): SchemaObject {
  const bodyName = `${route.name}Body`;
  components[bodyName] = toOpenApiSchema(route.input, { allowUnknown: true, components });
  const input = { $ref: `#/components/schemas/${bodyName}` };
  return {
    required: true,
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
    httpAnswers['413'] = {
      description: `The file is larger than ${route.multipart.maxBytes} bytes (AVATAR_MAX_BYTES)`,
      code: 413,
    };
  }
  if (route.rateLimited !== false) {
    httpAnswers['429'] = { description: FAILURE_MEANINGS.rateLimited, code: COMMON_CODES.rateLimited! };
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

/** The operations endpoints (src/ops/routes.ts), which no joi schema describes. */
const OPS_PATHS: Record<string, unknown> = {
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
    get: {
      operationId: 'openapi',
      tags: ['operations'],
      summary: 'This document',
      responses: { '200': { description: 'OpenAPI 3.0', content: json({ type: 'object' }) } },
    },
  },
  '/metrics': {
    get: {
      operationId: 'metrics',
      tags: ['operations'],
      summary: 'Prometheus metrics (text exposition format)',
      responses: { '200': { description: 'metrics', content: { 'text/plain': { schema: { type: 'string' } } } } },
    },
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
          description: '<user_id>_<YYYYMMDDHHmmss>.<jpg|png|webp>',
          schema: { type: 'string', pattern: '^[0-9]{1,10}_[0-9]{14}\\.(jpg|png|webp)$' },
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

/** The OpenAPI 3.0 document of the mounted routes, generated from their specs. */
export function buildOpenApi(routes: RouteSpec[], info: OpenApiInfo): SchemaObject {
  const paths: Record<string, unknown> = {};
  const schemas: Record<string, SchemaObject> = {};
  for (const route of routes) paths[`${info.prefix}/${route.name}`] = { post: operation(route, schemas) };
  Object.assign(paths, MEDIA_PATHS, OPS_PATHS);
  const securitySchemes = routes.some((r) => r.session === 'required')
    ? { session: { type: 'http', scheme: 'bearer', description: 'The token a login answer carries' } }
    : undefined;
  return {
    openapi: '3.0.3',
    info: { title: info.title, version: info.version, description: info.description },
    tags: [
      { name: 'users', description: 'The routes of the API document (user-api.zh.md)' },
      { name: 'media', description: 'Files uploaded through the API' },
      { name: 'operations', description: 'Probes and metrics for operators' },
    ],
    paths,
    components: { schemas, ...(securitySchemes ? { securitySchemes } : {}) },
  };
}
