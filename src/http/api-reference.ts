// `npm run docs`: writes docs/api.md, the API reference for mini-program developers, from the
// OpenAPI document that /openapi.json serves (itself built from the route specs) and the code
// tables. Deterministic: the same specs give the same bytes (test/http/api-reference.test.ts).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { API_PREFIX, openApiDocument } from '../app';
import { loadConfig } from '../config';
import { FAILURE_MEANINGS, FAILURE_MEANINGS_ZH, OTHER_FAILURE_MEANING } from '../errors';
import type { ProfileFlows } from '../users/flows';
import { userRoutes } from '../users/routes';
import { BODY_RULES, codeKinds, commonCodes, unauthenticatedMeaning, type SchemaObject } from './openapi';
import type { RouteSpec } from './route';

type FailureKindOrOther = ReturnType<typeof codeKinds>[number]['kinds'][number];

export const API_REFERENCE_FILE = join(__dirname, '..', '..', 'docs', 'api.md');

/** HTTP answers the envelope gives to any path, outside the OpenAPI operations (http/envelope.ts). */
const ANY_PATH_ANSWERS: Record<number, { code: number; en: string }> = {
  404: { code: 404, en: 'no such path: every route is POST /service/user/<name>' },
  405: {
    code: 405,
    en: 'a method the path does not take (any method: GET, PUT, TRACE, OPTIONS, QUERY...), with `Allow` naming the ones it takes',
  },
};

/**
 * Chinese meanings of the HTTP answers (the English ones come from the OpenAPI document). A
 * status the document gains without a line here stops `npm run docs`, so none goes untranslated.
 */
const HTTP_MEANINGS_ZH: Record<number, string> = {
  404: '没有这个路径：所有接口都是 POST /service/user/<name>',
  405: '该路径不接受此方法（任何方法：GET、PUT、TRACE、OPTIONS、QUERY……），响应头 Allow 列出可用的方法',
  408: '上传太慢（低于 AVATAR_UPLOAD_MIN_BYTES_PER_S）或中途停顿：连接被关闭',
  413: '请求体超过 BODY_LIMIT（解压之后计算）',
  415: '不支持的 Content-Encoding：只接受 identity、gzip 或 deflate',
  429: FAILURE_MEANINGS_ZH.rateLimited,
  503: '服务繁忙或暂不可用，请稍后重试（见 Retry-After）',
};

type Schema = SchemaObject & {
  $ref?: string;
  type?: string;
  format?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  anyOf?: Schema[];
  oneOf?: Schema[];
  items?: Schema;
  enum?: unknown[];
  nullable?: boolean;
  description?: string;
  example?: unknown;
};

interface Operation {
  summary: string;
  requestBody: { description?: string; content: Record<string, { schema: Schema }> };
  responses: Record<string, { description: string; content?: Record<string, { schema: Schema }> }>;
}

interface Document {
  paths: Record<string, { post?: Operation }>;
  components: { schemas: Record<string, Schema> };
}

/**
 * The route specs alone: their handlers are never called here, so they get no services, only
 * the configured values the specs show (the avatar limit), as config/ gives them without env.
 */
function specsOnly(): RouteSpec[] {
  const config = loadConfig({});
  const flows: Pick<ProfileFlows, 'avatarMaxBytes'> = { avatarMaxBytes: config.media.avatarMaxBytes };
  return userRoutes({} as never, flows as ProfileFlows);
}

/** The OpenAPI document of the user routes, as the app builds it. */
export function apiDocument(routes: RouteSpec[] = specsOnly()): Document {
  return openApiDocument(routes) as unknown as Document;
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const code = (text: string) => `\`${text}\``;
const row = (cells: string[]) => `| ${cells.map(cell).join(' | ')} |`;
const table = (head: string[], rows: string[][]) =>
  [row(head), row(head.map(() => '---')), ...rows.map(row)].join('\n');
const json = (value: unknown) => ['```json', JSON.stringify(value, null, 2), '```'].join('\n');

function operationOf(doc: Document, route: RouteSpec): Operation {
  const op = doc.paths[`${API_PREFIX}/${route.name}`]?.post;
  if (!op) throw new Error(`docs: the OpenAPI document has no POST ${API_PREFIX}/${route.name}`);
  return op;
}

function resolve(doc: Document, schema: Schema): Schema {
  if (!schema.$ref) return schema;
  const name = schema.$ref.replace('#/components/schemas/', '');
  const found = doc.components.schemas[name];
  if (!found) throw new Error(`docs: no schema ${schema.$ref}`);
  return resolve(doc, found);
}

function typeOf(doc: Document, raw: Schema): string {
  const schema = resolve(doc, raw);
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) return alternatives.map((alt) => typeOf(doc, alt)).join(' | ');
  const onlyNull = schema.enum?.length && schema.enum.every((v) => v === null);
  let type = onlyNull ? 'null' : (schema.type ?? 'any');
  if (type === 'string' && schema.format === 'binary') type = 'file';
  else if (type === 'string' && schema.format === 'uri') type = 'string (URL)';
  return schema.nullable && type !== 'null' ? `${type} | null` : type;
}

function limitsOf(doc: Document, raw: Schema): string[] {
  const s = resolve(doc, raw) as Record<string, unknown> & Schema;
  const out: string[] = [];
  const range = (min: unknown, max: unknown, unit: string) => {
    const text = (bound: string) => (unit ? `${bound} ${unit}` : bound);
    if (min !== undefined && max !== undefined) out.push(text(min === max ? `${min}` : `${min}–${max}`));
    else if (max !== undefined) out.push(text(`≤ ${max}`));
    else if (min !== undefined) out.push(text(`≥ ${min}`));
  };
  range(s.minLength, s.maxLength, 'characters');
  range(s.minimum, s.maximum, '');
  range(s.minItems, s.maxItems, 'items');
  range(s.minProperties, s.maxProperties, 'fields');
  if (s.enum && !s.enum.every((v) => v === null)) out.push(`one of ${s.enum.map((v) => JSON.stringify(v)).join(', ')}`);
  if (typeof s.pattern === 'string') out.push(`pattern ${code(s.pattern)}`);
  if (s.additionalProperties === false && s.properties) out.push('no other fields');
  for (const alt of s.anyOf ?? s.oneOf ?? []) {
    const inner = limitsOf(doc, alt);
    if (inner.length) out.push(`as ${typeOf(doc, alt)}: ${inner.join(', ')}`);
  }
  return out;
}

/** One row per field, nested objects' fields (an alternative's too) as `parent.child`. */
function fieldRows(doc: Document, raw: Schema, prefix = ''): string[][] {
  const schema = resolve(doc, raw);
  const rows: string[][] = [];
  const objects = [schema, ...(schema.anyOf ?? schema.oneOf ?? []).map((alt) => resolve(doc, alt))];
  for (const object of objects) {
    for (const [name, child] of Object.entries(object.properties ?? {})) {
      const field = resolve(doc, child);
      const required = object.required?.includes(name) ? 'yes 是' : 'no 否';
      const limits = limitsOf(doc, field);
      rows.push([code(prefix + name), typeOf(doc, field), required, limits.join('; ') || '—', field.description ?? '']);
      rows.push(...fieldRows(doc, field, `${prefix}${name}.`));
    }
  }
  return rows;
}

/** A value built from the schemas' examples; a required field without one is an error. */
function exampleOf(doc: Document, raw: Schema, where: string): unknown {
  const schema = resolve(doc, raw);
  if ('example' in schema) return schema.example;
  if (schema.enum?.length === 1) return schema.enum[0];
  const alternatives = schema.anyOf ?? schema.oneOf;
  // An object's anyOf only says which of its fields are required together (one-of rules).
  if (alternatives?.length && !schema.properties) return exampleOf(doc, alternatives[0]!, where);
  if (schema.type === 'object' && schema.properties) {
    const out: Record<string, unknown> = {};
    for (const [name, child] of Object.entries(schema.properties)) {
      const field = resolve(doc, child);
      // A file part has no value to show: the request example names it (requestExample).
      if (field.format === 'binary') continue;
      const known = 'example' in field || field.properties || field.anyOf || field.enum?.length === 1;
      if (known) out[name] = exampleOf(doc, field, `${where}.${name}`);
      else if (schema.required?.includes(name)) {
        throw new Error(`docs: ${where}.${name} has no example: give its joi schema an .example()`);
      }
    }
    return out;
  }
  throw new Error(`docs: ${where} has no example: give its joi schema an .example()`);
}

function successData(op: Operation): Schema {
  const schema = op.responses['200']?.content?.['application/json']?.schema;
  const success = schema?.oneOf?.find((s) => s.title === 'success');
  const data = success?.properties?.data;
  if (!data) throw new Error('docs: an operation without a success answer');
  return data;
}

/** The request body and the success answer of a route, from its schemas' examples. */
export function routeExamples(route: RouteSpec, doc: Document = apiDocument()): { request: unknown; data: unknown } {
  const op = operationOf(doc, route);
  const body = Object.values(op.requestBody.content)[0]!.schema;
  return {
    request: exampleOf(doc, body, `${route.name} request`),
    data: exampleOf(doc, successData(op), `${route.name} answer`),
  };
}

/** The HTTP answers (not 200) an operation lists, with the code their body carries. */
function httpAnswers(op: Operation): { status: number; code: number; en: string }[] {
  return Object.entries(op.responses)
    .filter(([status]) => status !== '200')
    .map(([status, answer]) => ({
      status: Number(status),
      code: Number(answer.content?.['application/json']?.schema.properties?.code?.enum?.[0] ?? status),
      en: answer.description,
    }));
}

function zhOfStatus(status: number): string {
  const zh = HTTP_MEANINGS_ZH[status];
  if (!zh) throw new Error(`docs: no Chinese meaning for HTTP ${status}: add one to HTTP_MEANINGS_ZH (${__filename})`);
  return zh;
}

function requestExample(route: RouteSpec, op: Operation, request: unknown): string {
  const types = Object.keys(op.requestBody.content);
  if (types.includes('application/json')) return json(request);
  // A file upload: what a mini-program calls, the file part named after the binary field.
  const fields = { ...(request as Record<string, unknown>) };
  const properties = op.requestBody.content[types[0]!]!.schema.properties ?? {};
  const file = Object.entries(properties).find(([, s]) => s.format === 'binary')?.[0];
  if (file) delete fields[file];
  return [
    '```js',
    'wx.uploadFile({',
    `  url: 'https://<host>${API_PREFIX}/${route.name}',`,
    '  filePath: tempFilePath, // from wx.chooseMedia',
    `  name: ${JSON.stringify(file ?? 'file')},`,
    `  formData: ${JSON.stringify(fields)},`,
    '});',
    '```',
  ].join('\n');
}

function routeSection(doc: Document, route: RouteSpec): string {
  const op = operationOf(doc, route);
  const { request, data } = routeExamples(route, doc);
  const meaning = (kind: FailureKindOrOther, lang: 'en' | 'zh') =>
    kind === 'other'
      ? OTHER_FAILURE_MEANING[lang]
      : kind === 'unauthenticated'
        ? unauthenticatedMeaning(route)[lang]
        : (lang === 'en' ? FAILURE_MEANINGS : FAILURE_MEANINGS_ZH)[kind];
  const codes = codeKinds(route).map(({ code: value, kinds }) => [
    String(value),
    kinds.map((kind) => meaning(kind, 'zh')).join('；'),
    kinds.map((kind) => meaning(kind, 'en')).join('; '),
  ]);
  const answers = httpAnswers(op);
  const body = Object.values(op.requestBody.content)[0]!.schema;
  const dataRows = fieldRows(doc, successData(op));
  const dataSchema = resolve(doc, successData(op));
  return [
    `## ${route.name}`,
    `\`POST ${API_PREFIX}/${route.name}\` — ${op.summary}`,
    `Body 请求体: ${Object.keys(op.requestBody.content).map(code).join(', ')}`,
    '### Request fields 请求参数',
    table(['field 字段', 'type 类型', 'required 必须', 'limits 限制', 'description 说明'], fieldRows(doc, body)),
    resolve(doc, body).description ?? '',
    route.multipart ? (op.requestBody.description ?? '') : '',
    '### Answer data 返回 data',
    dataRows.length
      ? table(['field 字段', 'type 类型', 'always 必有', 'limits 限制', 'description 说明'], dataRows)
      : [code(typeOf(doc, dataSchema)), dataSchema.description].filter((t) => t && t !== 'null').join(': '),
    '### Codes 返回码',
    table(['code', '含义', 'meaning'], [['0', '成功', 'success'], ...codes]),
    answers.length
      ? `Also 另有: ${answers.map((a) => `HTTP ${a.status}`).join(', ')} ([common answers 通用应答](#common-answers-通用应答)).`
      : '',
    '### Example 示例',
    'Request 请求:',
    requestExample(route, op, request),
    'Answer 应答:',
    json({ code: 0, msg: 'success', data }),
  ]
    .filter(Boolean)
    .join('\n\n');
}

/** docs/api.md, from the route specs. */
export function renderApiReference(routes: RouteSpec[] = specsOnly()): string {
  const doc = apiDocument(routes);
  const ops = routes.map((route) => operationOf(doc, route));

  const statuses = new Map<number, { code: number; en: string }>(
    Object.entries(ANY_PATH_ANSWERS).map(([s, a]) => [Number(s), a]),
  );
  for (const op of ops) for (const a of httpAnswers(op)) if (!statuses.has(a.status)) statuses.set(a.status, a);
  const common = [
    ...commonCodes()
      .filter(([, common]) => common.code < 0)
      .map(([kind, common]) => ['200', String(common.code), FAILURE_MEANINGS_ZH[kind], FAILURE_MEANINGS[kind]]),
    ...[...statuses.entries()]
      .sort(([a], [b]) => a - b)
      .map(([status, a]) => [String(status), String(a.code), zhOfStatus(status), a.en]),
  ];

  return (
    [
      '<!-- Generated by `npm run docs` (src/http/api-reference.ts) from the route specs: do not edit by hand. -->',
      '# User service API 用户服务接口',
      `Every route is ${code(`POST ${API_PREFIX}/<name>`)}. The same specs validate the requests and build the OpenAPI document served as ${code('/openapi.json')}, so this page cannot drift from the service.`,
      `所有接口均为 ${code(`POST ${API_PREFIX}/<name>`)}。本文由校验请求的同一份接口定义生成（${code('npm run docs')}），与服务保持一致。`,
      '## Conventions 约定',
      [
        `- **Request 请求**: a JSON body (${code('Content-Type: application/json')}, what ${code('wx.request')} sends by default) or a form (${code('application/x-www-form-urlencoded')}), unless a route lists other types. ${BODY_RULES} 请求体为 JSON（${code('wx.request')} 默认）或表单；未列出的字段会被忽略；JSON 中任何位置出现键 ${code('__proto__')}（即使在被忽略的字段里）都视为格式错误（-1）；数字也可以写成字符串。`,
        `- **Methods 方法**: a path not listed here is 404; any method a path does not take (GET on a route, PUT on ${code('/healthz')}, TRACE, OPTIONS, QUERY...) is 405 with ${code('Allow')} naming the ones it takes. Both in the envelope, never a 5xx. 未列出的路径返回 404；路径不接受的方法（任何方法）返回 405，响应头 ${code('Allow')} 列出可用的方法；均为 JSON 应答，不会是 5xx。`,
        `- **Answer 应答**: ${code('{"code": 0, "msg": "success", "data": ...}')} with HTTP 200. A failure has another ${code('code')}, ${code('data')} null and a ${code('msg')} for the developer (not for end users). 失败时 ${code('code')} 非 0，${code('data')} 为 null，${code('msg')} 供开发者排查。`,
        `- **Token**: in strict mode (${code('AUTH_MODE=token')}) a route that touches a user's data needs that user's session token, as ${code('Authorization: Bearer <token>')} or a ${code('token')} field; without one it answers -10. 严格模式下，操作用户数据的接口需要该用户的 token（请求头 ${code('Authorization: Bearer <token>')} 或 ${code('token')} 字段），否则返回 -10。`,
      ].join('\n'),
      '## Routes 接口一览',
      table(
        ['route 接口', 'summary 说明'],
        routes.map((route, i) => [`[${route.name}](#${route.name.toLowerCase()})`, ops[i]!.summary]),
      ),
      '## Common answers 通用应答',
      'Any route may give these, besides the codes of its own table. 以下应答适用于所有接口。',
      table(['HTTP', 'code', '含义', 'meaning'], common),
      'A failure, for example 失败示例:',
      json({ code: -1, msg: '"openid" is required', data: null }),
      ...routes.map((route) => routeSection(doc, route)),
    ].join('\n\n') + '\n'
  );
}

if (require.main === module) {
  writeFileSync(API_REFERENCE_FILE, renderApiReference());
  process.stdout.write(`wrote ${API_REFERENCE_FILE}\n`);
}
