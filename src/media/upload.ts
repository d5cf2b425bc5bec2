import type { IncomingMessage } from 'node:http';
import busboy from 'busboy';
import { BusyError, RateLimitedError, ServiceError } from '../errors';

export interface UploadLimits {
  /** Largest file accepted (AVATAR_MAX_BYTES): one byte more is HTTP 413. */
  maxFileBytes: number;
  /** The form field that carries the file (wx.uploadFile's `name`). */
  field: string;
  /**
   * AVATAR_UPLOAD_MIN_BYTES_PER_S: fewer bytes than this per second, over any window of
   * `windowMs`, and the upload is cut (HTTP 408); a stalled one is cut after `windowMs`.
   */
  minBytesPerSecond: number;
  windowMs: number;
}

/**
 * Uploads read at once: at most `perProcess`, at most `perKey` of one user. One more is refused
 * at once, never queued (a queue would hold its connection and, soon, its bytes): 503 when the
 * process is full, 429 when the user is. A slot is held from before the body is read until the
 * upload is answered, so the bodies in memory, the decode queue and the store writes of uploads
 * are all bounded by it.
 */
export class UploadGate {
  private total = 0;
  private readonly byKey = new Map<string, number>();
  /** Per key, when its pace allows the next upload (GCRA): none once that time has passed. */
  private readonly due = new Map<string, number>();

  constructor(
    private readonly perProcess: number,
    private readonly perKey: number,
    /** Uploads a key may start a minute (a burst of that many, then one every 60/n s); 0: any. */
    private readonly perKeyPerMinute = 0,
  ) {}

  /** Throws when `key` has started its minute's uploads already; else counts this one. */
  private pace(key: string, now = Date.now()): void {
    if (!this.perKeyPerMinute) return;
    const interval = 60_000 / this.perKeyPerMinute;
    const at = Math.max(this.due.get(key) ?? now, now);
    const early = at - now - interval * (this.perKeyPerMinute - 1);
    if (early > 0) throw new RateLimitedError(Math.ceil(early / 1000));
    if (this.due.size >= 10_000) for (const [k, t] of this.due) if (t <= now) this.due.delete(k);
    this.due.set(key, at + interval);
  }

  /** Uploads being read or worked on now. */
  get inflight(): number {
    return this.total;
  }

  /** Takes a slot for `key`, or throws; the function returned gives it back (once). */
  enter(key: string): () => void {
    const mine = this.byKey.get(key) ?? 0;
    if (mine >= this.perKey) throw new RateLimitedError(1);
    if (this.total >= this.perProcess) throw new BusyError('too many uploads at once, retry later');
    this.pace(key);
    this.byKey.set(key, mine + 1);
    this.total += 1;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.total -= 1;
      const now = (this.byKey.get(key) ?? 1) - 1;
      if (now > 0) this.byKey.set(key, now);
      else this.byKey.delete(key);
    };
  }
}

/** What a multipart form may hold around its file: wx.uploadFile's formData, kept small. */
const FORM = { fields: 8, fieldSize: 1024, parts: 10, headerPairs: 8 };
// The multipart framing around the file and fields: boundaries, part headers (busboy refuses a
// part header over 16 KiB), fields. The whole request may be this much larger than the file.
const FRAMING_BYTES = 64 * 1024;

// As the body parser names its errors, so the envelope answers both alike (HTTP 413, code 413).
const tooLarge = () =>
  Object.assign(new Error('request entity too large'), { name: 'PayloadTooLargeError', status: 413 });
const invalid = (message: string) => new ServiceError('invalid', message);
/** A body arriving slower than the minimum rate: its connection is cut once this is answered. */
export const tooSlow = () => Object.assign(new Error('upload too slow'), { status: 408, expose: true });

/**
 * The file of a multipart/form-data upload (as wx.uploadFile sends it), read as it streams in
 * and held in memory only up to `maxFileBytes`: a larger file, or a request whose declared or
 * counted size exceeds what such a file needs, is refused at once with 413, without reading the
 * rest. A body that stops, or trickles below the minimum rate, is refused with 408. Parts,
 * fields and part headers are bounded too; other fields are read and ignored.
 */
export function readUpload(req: IncomingMessage, limits: UploadLimits): Promise<Buffer> {
  const type = req.headers['content-type'] ?? '';
  if (!/^multipart\/form-data\s*;/i.test(type)) {
    return Promise.reject(invalid(`send the file as multipart/form-data, field "${limits.field}"`));
  }
  const requestLimit = limits.maxFileBytes + FRAMING_BYTES;
  if (Number(req.headers['content-length']) > requestLimit) return Promise.reject(tooLarge());

  return new Promise<Buffer>((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: req.headers,
        limits: { ...FORM, files: 1, fileSize: limits.maxFileBytes },
      });
    } catch {
      reject(invalid('malformed multipart/form-data header (no boundary?)'));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let found = false;
    let received = 0;
    let settled = false;
    // Bytes received at each of the last window's seconds: the rate is judged over the window.
    const marks = [0];
    const seconds = Math.max(1, Math.ceil(limits.windowMs / 1000));
    const watchdog = setInterval(() => {
      marks.push(received);
      if (marks.length <= seconds) return;
      const then = marks.shift()!;
      if (received - then < limits.minBytesPerSecond * seconds) finish(tooSlow());
    }, 1000).unref();

    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearInterval(watchdog);
      req.off('data', count);
      req.off('close', onClose);
      if (err) {
        // Nothing more is read: the rest of the request stays unread and the answer closes
        // the connection (see the route).
        req.unpipe(parser);
        req.pause();
        parser.removeAllListeners();
        parser.on('error', () => undefined);
        reject(err);
        return;
      }
      if (!found) reject(invalid(`no file in the form field "${limits.field}"`));
      else resolve(Buffer.concat(chunks, size));
    };
    const count = (chunk: Buffer) => {
      received += chunk.length;
      if (received > requestLimit) finish(tooLarge());
    };
    const onClose = () => {
      if (!req.complete) finish(Object.assign(new Error('request aborted'), { status: 400 }));
    };

    parser.on('file', (name, stream) => {
      if (name !== limits.field || found) {
        stream.resume();
        return;
      }
      found = true;
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        chunks.push(chunk);
      });
      stream.once('limit', () => finish(tooLarge()));
    });
    parser.once('partsLimit', () => finish(invalid('too many parts in the form')));
    parser.once('fieldsLimit', () => finish(invalid('too many fields in the form')));
    parser.once('filesLimit', () => finish(invalid('more than one file in the form')));
    parser.once('error', () => finish(invalid('malformed multipart/form-data body')));
    parser.once('close', () => finish(null));
    req.on('data', count);
    req.once('close', onClose);
    req.pipe(parser);
  });
}
