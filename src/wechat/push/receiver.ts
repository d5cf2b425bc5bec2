import type { IncomingMessage } from 'node:http';
import type { Context, Middleware } from 'koa';
import { ServiceError } from '../../errors';
import type { Logger } from '../../logger';
import { aesKeyOf, decryptPush, signatureMatches } from './crypto';
import { parsePushMessage, type PushMessage } from './message';

/** Where WeChat's message push arrives, on the API port. */
export const PUSH_PATH = '/wechat/push';

/** The largest push body read; one byte more is 413. WeChat's event pushes are well under 1 KiB. */
export const PUSH_MAX_BYTES = 64 * 1024;

/** A push whose timestamp is further off than this is refused (a replay, or a clock gone wrong). */
const MAX_CLOCK_SKEW_SECONDS = 300;

export interface PushSettings {
  /** WECHAT_PUSH_TOKEN: the shared secret that signs every push. */
  token: string;
  /** EncodingAESKeys for the secure mode, current first; none: only the plain mode is accepted. */
  aesKeys: readonly string[];
  /** WECHAT_APPID: the appid a secure-mode message must end with. */
  appid: string;
}

/**
 * What is done with a push that passed every check. It resolves once the change is done (the
 * push is answered `success` only then); a ServiceError 'invalid' is the message's fault (400),
 * any other failure is ours (503, and WeChat retries).
 */
export type PushHandler = (message: PushMessage) => Promise<void>;

/** A refusal: its HTTP status, and the reason logged (never the body). */
class Refusal extends Error {
  constructor(
    readonly status: 400 | 401 | 405 | 413 | 415,
    readonly reason: string,
  ) {
    super(reason);
  }
}

/**
 * WeChat's message push (消息推送), GET for the URL check and POST for messages, in the plain
 * and the secure (AES) mode, JSON and XML alike. No AUTH_MODE and no per-IP limit apply: WeChat
 * pushes from many addresses, and the signature is the proof. So the cheap checks come first:
 * the timestamp and the query's `signature` (a SHA-1 of three short strings) before a byte of
 * the body is read; the body is read to at most PUSH_MAX_BYTES; in secure mode `msg_signature`
 * is checked before anything is decrypted. A refusal changes nothing and logs one warn line.
 */
export function pushReceiver(settings: PushSettings, handle: PushHandler, logger: Logger): Middleware {
  const keys = settings.aesKeys.map(aesKeyOf);
  const log = logger.child({ component: 'wechat-push' });

  return async (ctx, next) => {
    if (ctx.path !== PUSH_PATH) return next();
    try {
      if (ctx.method === 'GET') return verifyUrl(ctx);
      if (ctx.method !== 'POST') {
        ctx.set('Allow', 'GET, POST');
        throw new Refusal(405, 'method not allowed');
      }
      await receive(ctx);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      // A small body left unread is read and dropped (never kept, never parsed), so that the
      // connection can carry the next push; anything else closes it (measured: a flood of
      // forged pushes with 60 KiB bodies cost the server ~1 ms each when every refusal closed
      // its connection, ~0.4 ms when drained).
      if (!ctx.req.complete && !(err.status !== 413 && (await discard(ctx.req)))) ctx.set('Connection', 'close');
      log.warn({ status: err.status, reason: err.reason, method: ctx.method }, 'wechat push refused');
      text(ctx, err.status, err.status === 401 ? 'unauthorized' : err.reason);
    }
  };

  function verifyUrl(ctx: Context): void {
    checkQuerySignature(ctx, true);
    const echostr = one(ctx.query.echostr);
    if (echostr === undefined) throw new Refusal(400, 'no echostr');
    text(ctx, 200, echostr);
  }

  async function receive(ctx: Context): Promise<void> {
    const secure = one(ctx.query.encrypt_type) === 'aes';
    // In secure mode WeChat sends `signature` beside `msg_signature`; when it is there it is
    // checked first, so that an unsigned flood costs no body read at all.
    checkQuerySignature(ctx, !secure || one(ctx.query.signature) !== undefined);
    const body = await readBounded(ctx.req);
    const outer = parsePushMessage(body.toString('utf8'));
    if (!outer) throw new Refusal(400, 'body is neither a JSON object nor an <xml> document');
    let message = outer;
    if (secure) {
      if (!keys.length) throw new Refusal(400, 'secure mode, but WECHAT_PUSH_AES_KEY is not set');
      const encrypt = outer.Encrypt;
      if (!encrypt) throw new Refusal(400, 'secure mode without an Encrypt field');
      const { timestamp, nonce } = stamp(ctx);
      if (!signatureMatches(one(ctx.query.msg_signature), [settings.token, timestamp, nonce, encrypt])) {
        throw new Refusal(401, 'bad msg_signature');
      }
      const plain = decryptPush(encrypt, keys, settings.appid);
      if (plain === 'undecryptable' || plain === 'wrong appid') throw new Refusal(400, plain);
      const inner = parsePushMessage(plain);
      if (!inner) throw new Refusal(400, 'decrypted message is neither JSON nor XML');
      message = inner;
    }
    if (message.AppID !== undefined && message.AppID !== settings.appid) throw new Refusal(400, 'wrong appid');
    try {
      await handle(message);
    } catch (err) {
      if (err instanceof ServiceError && err.kind === 'invalid') throw new Refusal(400, err.message);
      // Unanswered, WeChat retries; every effect is idempotent.
      log.warn({ err: (err as Error)?.message, event: message.Event }, 'wechat push not applied, WeChat will retry');
      text(ctx, 503, 'try again');
      return;
    }
    text(ctx, 200, 'success');
  }

  function stamp(ctx: Context): { timestamp: string; nonce: string } {
    const timestamp = one(ctx.query.timestamp) ?? '';
    const nonce = one(ctx.query.nonce) ?? '';
    if (!/^\d{1,12}$/.test(timestamp) || nonce.length > 128) throw new Refusal(401, 'bad timestamp or nonce');
    if (Math.abs(Date.now() / 1000 - Number(timestamp)) > MAX_CLOCK_SKEW_SECONDS) {
      throw new Refusal(401, 'timestamp more than 5 minutes off');
    }
    return { timestamp, nonce };
  }

  function checkQuerySignature(ctx: Context, required: boolean): void {
    const { timestamp, nonce } = stamp(ctx);
    if (!required) return;
    if (!signatureMatches(one(ctx.query.signature), [settings.token, timestamp, nonce])) {
      throw new Refusal(401, 'bad signature');
    }
  }
}

function text(ctx: Context, status: number, body: string): void {
  ctx.status = status;
  ctx.type = 'text/plain';
  // echostr is the caller's text, answered back: never to be sniffed as HTML.
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.body = body;
}

/** A query parameter given once; a repeated one counts as absent. */
function one(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** The body, at most PUSH_MAX_BYTES (413 beyond, counted as it arrives), uncompressed only. */
function readBounded(req: IncomingMessage, keep = true): Promise<Buffer> {
  const coding = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (coding !== 'identity' && coding !== '') return Promise.reject(new Refusal(415, 'compressed body'));
  if (Number(req.headers['content-length']) > PUSH_MAX_BYTES) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const done = (err: Error | null) => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      req.off('end', onEnd);
      if (err) {
        req.pause();
        reject(err);
      } else resolve(keep ? Buffer.concat(chunks, size) : Buffer.alloc(0));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > PUSH_MAX_BYTES) return done(tooLarge());
      if (keep) chunks.push(chunk);
    };
    const onEnd = () => done(null);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', () => done(new Refusal(400, 'request aborted')));
    req.once('close', () => req.complete || done(new Refusal(400, 'request aborted')));
  });
}

/** Reads the rest of a body and drops it: true once it ended within PUSH_MAX_BYTES, else false. */
function discard(req: IncomingMessage): Promise<boolean> {
  if (Number(req.headers['content-length']) > PUSH_MAX_BYTES) return Promise.resolve(false);
  return readBounded(req, false).then(
    () => true,
    () => false,
  );
}

const tooLarge = () => new Refusal(413, `body over ${PUSH_MAX_BYTES} bytes`);
