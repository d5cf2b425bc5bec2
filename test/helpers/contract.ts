import Ajv, { type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { apiDocument } from '../../src/http/api-reference';

/**
 * The contract harness: every answer the suite receives from a service is held to the OpenAPI
 * document that service serves (/openapi.json), so an answer the document does not allow fails
 * the very test that received it. It applies to every route and path the document lists, and
 * to the rules it states for the rest (any other path 404, any other method 405 with Allow),
 * with no per-route work: a new route is checked as soon as the document has it.
 *
 * Hooked where the tests make their requests: the global fetch (helpers/http.ts's post() and
 * every test's own fetch) and rawPost (helpers/attacks.ts). A service is watched from the
 * moment startService, spawnService or watchService registers its origins until it stops.
 */

type Schema = Record<string, unknown>;
interface MediaType {
  schema?: Schema;
}
interface DocResponse {
  $ref?: string;
  content?: Record<string, MediaType>;
  headers?: Record<string, unknown>;
}
interface Operation {
  responses: Record<string, DocResponse>;
}
type PathItem = Partial<Record<string, Operation>> & {
  servers?: { url: string }[];
  parameters?: unknown[];
};
export interface OpenApiDocument {
  paths: Record<string, PathItem>;
  components: { schemas?: Record<string, Schema>; responses?: Record<string, DocResponse> };
}

/** What a client received: enough to hold it to the document. */
export interface ReceivedAnswer {
  method: string;
  /** The path, raw (as sent), without the query. */
  path: string;
  status: number;
  /** Lowercased header names. */
  headers: Record<string, string | undefined>;
  /** The body as text ('' for none, HEAD included). */
  body: string;
}

const OPERATIONS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/** Statuses Node itself answers, before the app, without a body (the document says so). */
const NODE_ANSWERS = new Set([400, 431]);

interface PathMatcher {
  template: string;
  regex: RegExp;
  params: { name: string; validate: ValidateFunction }[];
  item: PathItem;
  /** Whether only the operations listener serves it (its own `servers`). */
  opsOnly: boolean;
}

/** An OpenAPI 3.0 document compiled for checking answers. */
export class Contract {
  private readonly ajv = new Ajv({ strict: false, allErrors: true });
  private readonly matchers: PathMatcher[];
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(readonly doc: OpenApiDocument) {
    addFormats(this.ajv);
    this.ajv.addFormat('binary', true);
    this.matchers = Object.entries(doc.paths).map(([template, item]) => {
      const names: string[] = [];
      const source = template
        .split(/(\{[^}]+\})/)
        .map((part) => {
          const param = /^\{(.+)\}$/.exec(part);
          if (!param) return part.replace(/[.*+?^$()|[\]\\]/g, '\\$&');
          names.push(param[1]!);
          return '([^/]+)';
        })
        .join('');
      const declared = [
        item.parameters ?? [],
        ...OPERATIONS.map((m) => (item[m] as { parameters?: unknown[] })?.parameters ?? []),
      ]
        .flat()
        .filter((p): p is { name: string; in: string; schema: Schema } => (p as { in?: string }).in === 'path');
      const params = names.map((name) => {
        const schema = declared.find((p) => p.name === name)?.schema ?? {};
        return { name, validate: this.compile(schema) };
      });
      return { template, regex: new RegExp(`^${source}$`), params, item, opsOnly: Boolean(item.servers?.length) };
    });
    this.precompile();
  }

  /**
   * Compiles every answer schema now, when the service starts: compiled on first use instead,
   * a schema's 10-100 ms would land in the middle of a test, on the event loop that also runs
   * its fake WeChat (a storm's WeChat replies then come late).
   */
  private precompile(): void {
    for (const { template, item } of this.matchers) {
      for (const method of OPERATIONS) {
        const op = item[method] as Operation | undefined;
        for (const [status, response] of Object.entries(op?.responses ?? {})) {
          const schema = response.content?.['application/json']?.schema;
          if (schema) this.validatorFor(`${method} ${template} ${status} application/json`, schema);
        }
      }
    }
    for (const [name, response] of Object.entries(this.doc.components.responses ?? {})) {
      const schema = response.content?.['application/json']?.schema;
      if (schema) this.validatorFor(`${name} application/json`, schema);
    }
  }

  private compile(schema: Schema): ValidateFunction {
    // Refs are `#/components/...`: the document's components ride along at the root.
    return this.ajv.compile({ ...schema, components: this.doc.components });
  }

  private validatorFor(key: string, schema: Schema): ValidateFunction {
    let validate = this.validators.get(key);
    if (!validate) {
      validate = this.compile(schema);
      this.validators.set(key, validate);
    }
    return validate;
  }

  /** The path the document lists for a request path (its parameters valid), on that listener. */
  private match(path: string, listener: 'api' | 'ops'): PathMatcher | undefined {
    return this.matchers.find((m) => {
      if (m.opsOnly && listener !== 'ops') return false;
      const found = m.regex.exec(path);
      if (!found) return false;
      return m.params.every((p, i) => p.validate(decodeURIComponent(found[i + 1]!)));
    });
  }

  /** What a request body must be, for a POST route: its JSON schema, or undefined. */
  requestSchema(path: string): Schema | undefined {
    const op = this.doc.paths[path]?.post as { requestBody?: { content: Record<string, MediaType> } } | undefined;
    return op?.requestBody?.content['application/json']?.schema;
  }

  /** Whether a value is valid against a schema of this document. */
  validate(key: string, schema: Schema, value: unknown): { valid: boolean; errors: string } {
    const validate = this.validatorFor(key, schema);
    const valid = validate(value) as boolean;
    return { valid, errors: valid ? '' : this.ajv.errorsText(validate.errors) };
  }

  /** What the document does not allow in an answer: [] when it allows all of it. */
  check(answer: ReceivedAnswer, listener: 'api' | 'ops'): string[] {
    if (NODE_ANSWERS.has(answer.status) && answer.body === '') return [];
    const matched = this.match(answer.path, listener);
    if (!matched) return this.checkResponse(answer, 'NotFound', { status: 404 });
    const method = answer.method.toLowerCase();
    const op = (matched.item[method] ?? (method === 'head' ? matched.item.get : undefined)) as Operation | undefined;
    if (!op) {
      const methods = OPERATIONS.filter((m) => matched.item[m]).map((m) => m.toUpperCase());
      if (methods.includes('GET') && !methods.includes('HEAD')) methods.push('HEAD');
      const problems = this.checkResponse(answer, 'MethodNotAllowed', { status: 405 });
      const allow = (answer.headers.allow ?? '').split(/\s*,\s*/).filter(Boolean);
      if (allow.sort().join(', ') !== methods.sort().join(', ')) {
        problems.push(`Allow is "${answer.headers.allow ?? ''}", the document says ${methods.join(', ')}`);
      }
      return problems;
    }
    const response = op.responses[String(answer.status)] ?? op.responses.default;
    if (!response) {
      return [`HTTP ${answer.status} is not an answer of ${answer.method} ${matched.template} in the document`];
    }
    return this.checkBody(answer, response, `${method} ${matched.template} ${answer.status}`);
  }

  private checkResponse(answer: ReceivedAnswer, name: string, expected: { status: number }): string[] {
    if (answer.status !== expected.status) {
      return [`HTTP ${answer.status}, where the document says ${expected.status} (${name})`];
    }
    const response = this.doc.components.responses?.[name];
    if (!response) return [`the document has no components/responses/${name}`];
    return this.checkBody(answer, response, name);
  }

  private checkBody(answer: ReceivedAnswer, response: DocResponse, key: string): string[] {
    const content = response.content;
    if (!content) return answer.body === '' ? [] : [`a body where the document says none (${key})`];
    if (answer.method === 'HEAD') return [];
    const type = (answer.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const media = Object.keys(content).find((range) => {
      const [main, sub] = range.split('/');
      const [tMain, tSub] = type.split('/');
      return (main === '*' || main === tMain) && (sub === '*' || sub === tSub);
    });
    if (!media) return [`Content-Type "${type}" is not one of ${Object.keys(content).join(', ')} (${key})`];
    const schema = content[media]!.schema;
    if (!schema || media !== 'application/json') return [];
    let value: unknown;
    try {
      value = JSON.parse(answer.body);
    } catch {
      return [`the body is not JSON (${key}): ${answer.body.slice(0, 100)}`];
    }
    const { valid, errors } = this.validate(`${key} ${media}`, schema, value);
    return valid ? [] : [`${errors} (${key}): ${answer.body.slice(0, 300)}`];
  }
}

export class ContractViolation extends Error {
  override name = 'ContractViolation';
}

interface Watched {
  contract: Contract;
  listener: 'api' | 'ops';
}

const watched = new Map<string, Watched>();
const contracts = new Map<string, Contract>();

/** The contract of a document, compiled once per distinct document. */
function contractOf(doc: OpenApiDocument): Contract {
  const key = JSON.stringify(doc);
  let contract = contracts.get(key);
  if (!contract) {
    contract = new Contract(doc);
    contracts.set(key, contract);
  }
  return contract;
}

/** The contract of the service at `origin`, if it is watched. */
export function contractAt(origin: string): Contract | undefined {
  return watched.get(new URL(origin).origin)?.contract;
}

/** Throws a ContractViolation when a watched service's answer is not allowed by its document. */
export function checkAnswer(url: string | URL, answer: Omit<ReceivedAnswer, 'path'>): void {
  const parsed = new URL(url);
  const target = watched.get(parsed.origin);
  if (!target) return;
  const path = parsed.pathname;
  const problems = target.contract.check({ ...answer, path }, target.listener);
  if (problems.length) {
    throw new ContractViolation(
      `answer not allowed by /openapi.json: ${answer.method} ${path} (${target.listener} port) -> ` +
        problems.join('; '),
    );
  }
}

const originalFetch = globalThis.fetch;

/** The document a running service serves, fetched from its operations port. */
async function servedDocument(opsUrl: string): Promise<OpenApiDocument> {
  const res = await originalFetch(`${opsUrl}/openapi.json`);
  if (res.status !== 200) throw new Error(`GET ${opsUrl}/openapi.json: HTTP ${res.status}`);
  return (await res.json()) as OpenApiDocument;
}

/**
 * Watches a service's answers from now on, held to the document it serves on `opsUrl` (or, for
 * an app without an operations listener, the one the route specs give). Returns the unwatch.
 */
export async function watchService(url: string, opsUrl?: string): Promise<() => void> {
  const doc = opsUrl ? await servedDocument(opsUrl) : (apiDocument() as unknown as OpenApiDocument);
  const contract = contractOf(doc);
  const origins: [string, Watched][] = [[new URL(url).origin, { contract, listener: 'api' }]];
  if (opsUrl) origins.push([new URL(opsUrl).origin, { contract, listener: 'ops' }]);
  for (const [origin, entry] of origins) watched.set(origin, entry);
  return () => {
    for (const [origin, entry] of origins) if (watched.get(origin) === entry) watched.delete(origin);
  };
}

function headersOf(headers: Headers): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  headers.forEach((value, name) => (out[name] = value));
  return out;
}

/**
 * Wraps the global fetch: an answer of a watched service is read (a clone of it) and held to
 * the document before the test gets it; a violation rejects the test's own fetch.
 */
export function installFetchCheck(): void {
  if ((globalThis.fetch as { contractChecked?: boolean }).contractChecked) return;
  const checked = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const res = await originalFetch(input, init);
    const url = new URL(input instanceof Request ? input.url : input);
    if (!watched.has(url.origin)) return res;
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    let body: string;
    try {
      body = method === 'HEAD' ? '' : await res.clone().text();
    } catch {
      return res; // the test cut the answer short (an abort): there is nothing whole to check
    }
    checkAnswer(url, { method, status: res.status, headers: headersOf(res.headers), body });
    return res;
  };
  globalThis.fetch = Object.assign(checked, { contractChecked: true }) as typeof fetch;
}
