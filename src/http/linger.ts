import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Middleware } from 'koa';

export interface LingerLimits {
  /** Bytes of a body left unread at the answer that are read (and dropped) after it, at most. */
  maxBytes: number;
  /** How long the connection is kept for that, at most. */
  maxMs: number;
  /** Connections of the process lingering at once, at most; past it an answer closes at once. */
  maxConnections: number;
}

/**
 * What lingering may cost per connection: reading (never holding) 8 MiB, for 5 s at most
 * (nginx's lingering_timeout). Node's fetch (undici) reads no answer until it has written its
 * whole body, and gets EPIPE instead of the 413 when the socket is reset under its writes: a
 * client posting up to 8 MiB (four times AVATAR_MAX_BYTES) still reads why it was refused. A
 * declared 1 GB body costs the service 8 MiB of reading, not the ~960 MiB Node reads to keep a
 * keep-alive connection.
 */
export const LINGER: LingerLimits = { maxBytes: 8 * 1024 * 1024, maxMs: 5000, maxConnections: 4 };

export interface LingerEvents {
  /** The client stopped sending a body before its end (the socket is gone). */
  onAborted?(): void;
  /** After the answer, the unread rest of a body was read to its end ('drained') or cut at a bound. */
  onUnread?(outcome: 'drained' | 'cut'): void;
}

/**
 * Bodies the service does not read to their end, whatever refused them: a route answering
 * without reading (a guard's -10 before an upload, -1 for multipart sent to a JSON route), a
 * body over its limit (413), an upload refused half-way. Node would either read the whole rest
 * to keep the connection alive (a declared 1 GB body is read for as long as the request timeout
 * allows) or, for a `Connection: close` answer, reset the socket as soon as the answer is
 * written, and a client still sending then gets EPIPE instead of the answer.
 *
 * So, as nginx's lingering close: such an answer says `Connection: close`; once it is written
 * the service ends its side (FIN), reads and drops at most `maxBytes` of what still arrives for
 * at most `maxMs`, then closes. A body that ends within that closes the connection at once.
 *
 * The contract with the code that reads bodies (http/body.ts, media/upload.ts): when it refuses
 * a body it stops reading (pauses the request, lets go of its listeners) and answers; it never
 * destroys the socket itself. Everything after the answer is this middleware's business.
 *
 * Outermost: it sees every answer of the app, whichever middleware formed it.
 */
export function lingeringClose(limits: LingerLimits, events: LingerEvents = {}): Middleware {
  // Draining is reading, and what is read is garbage until the next collection: 254 refused
  // uploads of 2 MiB drained at once took the process from ~143 to ~180 MB (VmHWM,
  // test/media/upload-bounds.test.ts). Past maxConnections an answer closes as Node closes any
  // Connection: close answer (a client still sending may then see a reset instead of it).
  let lingering = 0;
  const release = () => {
    lingering--;
  };
  const watch: Middleware = async (ctx, next) => {
    const { req } = ctx;
    try {
      await next();
    } finally {
      if (!req.complete) {
        if (req.socket.destroyed || req.readableAborted) events.onAborted?.();
        else if (!ctx.headerSent && ctx.respond !== false) {
          ctx.set('Connection', 'close');
          if (lingering < limits.maxConnections) {
            lingering++;
            req.socket.once('close', release);
            lingerAfterAnswer(req, ctx.res, req.socket, limits, events);
          }
        }
      }
    }
  };
  // The common case, a small body already parsed off the wire: nothing to watch, and no async
  // frame of its own.
  return (ctx, next) => (ctx.req.complete ? next() : watch(ctx, next));
}

function lingerAfterAnswer(
  req: IncomingMessage,
  res: NodeJS.EventEmitter & { writableFinished: boolean },
  socket: Socket,
  limits: LingerLimits,
  events: LingerEvents,
): void {
  // Node ends a `Connection: close` answer with socket.destroySoon(), which destroys the socket
  // once the answer is written: the unread input then makes the kernel send a reset, which can
  // overtake the answer at the client. Only its first half, ending our side, is kept.
  socket.destroySoon = function (this: Socket) {
    if (this.writable) this.end();
  };
  let seen = 0;
  let done = false;
  let timer: NodeJS.Timeout | undefined;
  const close = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    req.off('data', count);
    events.onUnread?.(req.complete ? 'drained' : 'cut');
    // Not before the answer is written: a client that floods is still owed it.
    if (res.writableFinished) socket.destroy();
    else {
      req.pause();
      res.once('finish', () => socket.destroy());
    }
  };
  const count = (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > limits.maxBytes) close();
  };
  // Read from now on, by this listener: Node would otherwise drop the rest unread and uncounted
  // after the answer (req._dump()), for as long as the client sends.
  req.on('data', count);
  req.resume();
  socket.once('close', close);
  res.once('finish', () => {
    if (done) return;
    timer = setTimeout(close, limits.maxMs);
    timer.unref();
  });
}

/**
 * Errors of a client's connection (reset, closed mid-request, unparsable HTTP, timed out)
 * rather than of this service: Koa reports them on app 'error' like a bug. They are counted and
 * logged at debug, without a stack: a client that hangs up is not an incident.
 */
export function isPeerError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return PEER_CODES.has(code) || code.startsWith('HPE_');
}

const PEER_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ETIMEDOUT',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_HTTP_REQUEST_TIMEOUT',
]);
