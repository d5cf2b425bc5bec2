import type { IncomingMessage } from 'node:http';
import { createUnzip } from 'node:zlib';
import { parse as parseJsonSafely } from '@hapi/bourne';
import type Koa from 'koa';
// koa-body is no longer the reader, but its declaration of ctx.request.body is still the one
// this module fills (and the one a multipart reader built on koa-body would share).
import type {} from 'koa-body';
import type { Context, Middleware } from 'koa';
import { parse as parseForm } from 'qs';

/**
 * qs's own decoder keeps a malformed escape (`%FF`, `%E4%B8`, a bare `%`) as literal text, so
 * bytes that are not UTF-8 would pass as the string "%FF". A form that is not valid UTF-8
 * percent-encoding is refused instead (HTTP 400 from the parser, code -1 from the envelope).
 */
function strictFormDecoder(str: string): string {
  const value = str.replace(/\+/g, ' ');
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    throw Object.assign(new Error('form field is not valid UTF-8 percent-encoding'), { status: 400 });
  }
}

const UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 * 1024 };

/** BODY_LIMIT (`<n>b`, `<n>kb` or `<n>mb`, as config checks it) in bytes (k = 1024). */
export function limitInBytes(limit: string): number {
  const match = /^(\d+)(b|kb|mb)$/i.exec(limit);
  if (!match) throw new Error(`not a body size: ${limit}`);
  return Number(match[1]) * UNITS[match[2]!.toLowerCase()]!;
}

/** What mini-programs send (wx.request's default): JSON in UTF-8. */
const PLAIN_JSON = /^application\/json\s*(?:;\s*charset="?utf-8"?\s*)?$/i;
/** The other types read as JSON (koa-body's list, kept so that no client that worked breaks). */
const JSON_TYPES = [
  'application/json',
  'application/json-patch+json',
  'application/vnd.api+json',
  'application/csp-report',
  'application/reports+json',
];
// A JSON body must be an object or an array (co-body's strict mode).
const OBJECT_OR_ARRAY = /^[ \t\n\r]*[[{]/;

/** What a parsed body is (the request.body koa-body's types declare). */
type JsonBody = NonNullable<Koa.Request['body']>;

/** A body's bytes between readBody and parseBody: decoded, at most the limit, not yet parsed. */
interface RawBody {
  kind: 'json' | 'form';
  bytes: Buffer;
}
interface BodyState {
  rawBody?: RawBody;
}

const httpError = (status: number, name: string, message: string) =>
  Object.assign(new Error(message), { name, status });
const tooLarge = () => httpError(413, 'PayloadTooLargeError', 'request entity too large');
const aborted = () => httpError(400, 'BadRequestError', 'request aborted');
const unreadable = () => httpError(400, 'BadRequestError', 'the compressed body cannot be decompressed');

/**
 * The one Content-Encoding of a body, lowercased: identity (or none), gzip or deflate. Anything
 * else, a list included (`gzip, gzip` is a bomb inside a bomb), is refused with 415 before a
 * byte is read; so is br, which inflation would have decoded.
 */
function contentCoding(header: string | undefined): 'identity' | 'gzip' | 'deflate' {
  const coding = header === undefined ? 'identity' : header.trim().toLowerCase();
  if (coding === 'identity' || coding === '') return 'identity';
  if (coding === 'gzip' || coding === 'deflate') return coding;
  throw httpError(415, 'UnsupportedMediaTypeError', 'unsupported Content-Encoding');
}

/**
 * Reads a body as it arrives, at most `limit` bytes (else 413): a small request is in the
 * parser's buffer when the middleware runs, and is then taken at once, without listeners, a
 * promise per chunk or a copy.
 */
async function readIdentity(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) throw tooLarge();
  // The middleware may run while the parser is still on the headers; one microtask later it
  // has buffered a body that came in the same packet.
  if (req.readableLength !== declared) await null;
  if (req.readableLength === declared) return (req.read() as Buffer | null) ?? Buffer.alloc(0);
  return readStreamed(req, limit, null);
}

/**
 * A gzip or deflate body, inflated as it streams: both the compressed bytes received and the
 * inflated bytes produced are counted, and the first to pass `limit` ends the read with 413.
 * A 1 KB bomb therefore costs at most `limit` bytes of output and one zlib stream, which is
 * destroyed at once, never the megabytes it would inflate to.
 */
function readInflated(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers['content-length']) > limit) return Promise.reject(tooLarge());
  return readStreamed(req, limit, createUnzip());
}

function readStreamed(
  req: IncomingMessage,
  limit: number,
  inflater: ReturnType<typeof createUnzip> | null,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let size = 0;
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      req.off('end', onEnd);
      if (err) req.pause();
      inflater?.destroy();
      if (err) reject(err);
      else resolve(Buffer.concat(chunks, size));
    };
    const onOutput = (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) return finish(tooLarge());
      chunks.push(chunk);
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) return finish(tooLarge());
      if (!inflater) return onOutput(chunk);
      if (!inflater.write(chunk)) {
        req.pause();
        inflater.once('drain', () => done || req.resume());
      }
    };
    const onEnd = () => (inflater ? inflater.end() : finish(null));
    if (inflater) {
      inflater.on('data', onOutput);
      inflater.once('end', () => finish(null));
      inflater.once('error', () => finish(unreadable()));
    }
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', (err) => finish(Object.assign(err, { status: 400 })));
    req.once('close', () => {
      if (!req.complete) finish(aborted());
    });
  });
}

function parseJson(bytes: Buffer): JsonBody {
  const decoded = bytes.toString('utf8');
  const text = decoded.charCodeAt(0) === 0xfeff ? decoded.slice(1) : decoded;
  if (!text) return {};
  if (!OBJECT_OR_ARRAY.test(text)) {
    throw Object.assign(new SyntaxError('invalid JSON, only supports object and array'), { status: 400 });
  }
  try {
    return parseJsonSafely(text, { protoAction: 'error' }) as JsonBody;
  } catch (err) {
    throw Object.assign(err as Error, { status: 400 });
  }
}

// allowDots as co-body set it; brackets two deep, 100 fields and 20 array items at most.
const FORM_OPTIONS = { allowDots: true, depth: 2, parameterLimit: 100, arrayLimit: 20, decoder: strictFormDecoder };

function parseUrlencoded(bytes: Buffer): JsonBody {
  try {
    return parseForm(bytes.toString('utf8'), FORM_OPTIONS) as JsonBody;
  } catch (err) {
    throw Object.assign(err as Error, { status: 400 });
  }
}

function bodyKind(ctx: Context): RawBody['kind'] | null {
  if (PLAIN_JSON.test(ctx.req.headers['content-type'] ?? '')) return 'json';
  if (!ctx.request.is([...JSON_TYPES, 'urlencoded'])) return null;
  return ctx.request.is(JSON_TYPES) ? 'json' : 'form';
}

/**
 * Reads the body of a POST, JSON or a urlencoded form, into bytes and nothing more: at most
 * `limit` bytes after decompression (else 413), identity, gzip or deflate (else 415). Other
 * types (text, multipart) are left unread for the router to refuse. Parsing waits for
 * parseBody, after the load shedder, so a request refused for load costs no parse.
 */
export function readBody(limit: string): Middleware {
  const limitBytes = limitInBytes(limit);
  return async (ctx, next) => {
    if (ctx.method !== 'POST') return next();
    const { req } = ctx;
    try {
      const coding = contentCoding(req.headers['content-encoding']);
      const kind = bodyKind(ctx);
      if (kind) {
        const bytes = coding === 'identity' ? await readIdentity(req, limitBytes) : await readInflated(req, limitBytes);
        (ctx.state as BodyState).rawBody = { kind, bytes };
      }
    } catch (err) {
      // The rest of a refused body is not read here: the connection cannot carry another
      // request. Where the app has it, lingeringClose (http/linger.ts) bounds what follows.
      if (!req.complete) ctx.set('Connection', 'close');
      throw err;
    }
    return next();
  };
}

/** Parses what readBody read into ctx.request.body, and lets go of the bytes. */
export function parseBody(): Middleware {
  return (ctx, next) => {
    const state = ctx.state as BodyState;
    const raw = state.rawBody;
    if (raw) {
      state.rawBody = undefined;
      ctx.request.body = raw.kind === 'json' ? parseJson(raw.bytes) : parseUrlencoded(raw.bytes);
    }
    return next();
  };
}

/**
 * JSON and urlencoded forms (the document's update example is a form), nothing else: no
 * multipart, no files. readBody then parseBody; the service puts its load shedder between them.
 */
export function bodyParser(limit: string): Middleware {
  const read = readBody(limit);
  const parse = parseBody();
  return (ctx, next) => read(ctx, () => parse(ctx, next));
}
