import type { IncomingMessage } from 'node:http';
import { parse as parseJsonSafely } from '@hapi/bourne';
import type { HttpMethodEnum, KoaBodyMiddlewareOptions } from 'koa-body';
import type Koa from 'koa';
import type { Middleware } from 'koa';

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

/** BODY_LIMIT (`<n>b`, `<n>kb` or `<n>mb`, as config checks it) in bytes, as koa-body reads it. */
export function limitInBytes(limit: string): number {
  const match = /^(\d+)(b|kb|mb)$/i.exec(limit);
  if (!match) throw new Error(`not a body size: ${limit}`);
  return Number(match[1]) * UNITS[match[2]!.toLowerCase()]!;
}

/** What mini-programs send (wx.request's default): JSON in UTF-8. */
const PLAIN_JSON = /^application\/json\s*(?:;\s*charset="?utf-8"?\s*)?$/i;
// co-body's strict mode: a JSON body must be an object or an array.
const OBJECT_OR_ARRAY = /^[ \t\n\r]*[[{]/;

/** What koa-body's types say a parsed body is (the request.body koa-body declares). */
type JsonBody = NonNullable<Koa.Request['body']>;

// Named as raw-body's http-errors are, so either path fails alike.
const tooLarge = () =>
  Object.assign(new Error('request entity too large'), { name: 'PayloadTooLargeError', status: 413 });
const aborted = () => Object.assign(new Error('request aborted'), { name: 'BadRequestError', status: 400 });

/**
 * Reads and parses a plain JSON body by co-body's rules (koa-body's JSON parser): at most
 * `limit` bytes (else 413), lenient UTF-8 with a leading BOM dropped, an empty body is {},
 * anything but an object or array is a 400 SyntaxError, and so is a `__proto__` key (bourne).
 */
async function readPlainJson(req: IncomingMessage, limit: number): Promise<JsonBody> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) {
    req.pause();
    throw tooLarge();
  }
  // A small request arrives in one packet, but the middleware runs while the parser is still
  // on its headers. One microtask later the parser has buffered the whole body: it is then
  // taken at once, without listeners, a promise per chunk or a copy.
  if (req.readableLength !== declared) await null;
  if (req.readableLength === declared) {
    const buffered = req.read() as Buffer | null;
    return parsePlainJson(buffered ? buffered.toString('utf8') : '');
  }
  return readStreamed(req, limit);
}

/** A body that is chunked, or did not arrive with its headers: read as it comes. */
function readStreamed(req: IncomingMessage, limit: number): Promise<JsonBody> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (err: Error) => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.pause();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return stop(tooLarge());
      chunks.push(chunk);
    };
    const onEnd = () => {
      try {
        resolve(parsePlainJson(Buffer.concat(chunks, size).toString('utf8')));
      } catch (err) {
        reject(err as Error);
      }
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', (err) => stop(Object.assign(err, { status: 400 })));
    req.once('close', () => {
      if (!req.complete) stop(aborted());
    });
  });
}

function parsePlainJson(decoded: string): JsonBody {
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

/**
 * JSON and urlencoded forms (the document's update example is a form), nothing else: no
 * multipart, no files. One size limit for both; a larger body is refused with 413.
 *
 * A POST of plain JSON (application/json, UTF-8, not compressed: every mini-program launch) is
 * read here by the same rules as koa-body's JSON parser, without its general machinery: four
 * content-type matches, inflation and iconv streams and a limit parsed on every request were
 * the most expensive middleware of the cached loginByOpenid path, 20-30 us of about 140 (the
 * stack measured layer by layer). Every other body, forms, other charsets, gzip, takes koa-body.
 */
export function bodyParser(limit: string): Middleware {
  const limitBytes = limitInBytes(limit);
  const general = koaBodyOnDemand({
    json: true,
    urlencoded: true,
    text: false,
    multipart: false,
    jsonLimit: limit,
    formLimit: limit,
    jsonStrict: true,
    // The enum's value, spelled out: importing it would load koa-body at start.
    parsedMethods: ['POST' as HttpMethodEnum],
    queryString: { depth: 2, parameterLimit: 100, arrayLimit: 20, decoder: strictFormDecoder },
  });
  return async (ctx, next) => {
    const { headers } = ctx.req;
    const encoding = headers['content-encoding'];
    if (
      ctx.method !== 'POST' ||
      !PLAIN_JSON.test(headers['content-type'] ?? '') ||
      (encoding !== undefined && encoding.toLowerCase() !== 'identity')
    ) {
      return general()(ctx, next);
    }
    ctx.request.body = await readPlainJson(ctx.req, limitBytes);
    return next();
  };
}

/**
 * koa-body's middleware, built by the first body that needs it. koa-body with zod, co-body and
 * formidable holds about 4 MiB of heap, and V8 lets the old space grow in proportion to what
 * lives in it; a process whose callers only send plain JSON, as mini-programs do, never needs
 * it. It is resolved at once, so a broken install still fails at start, not on the first form.
 */
function koaBodyOnDemand(options: Partial<KoaBodyMiddlewareOptions>): () => Middleware {
  const path = require.resolve('koa-body');
  let built: Middleware | undefined;
  // A synchronous require, once: the first form waits for it instead of every request for a promise.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return () => (built ??= (require(path) as typeof import('koa-body')).koaBody(options));
}
