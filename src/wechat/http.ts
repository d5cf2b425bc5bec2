import { ServiceError } from '../errors';

/** A refusal from a WeChat server API, by errcode. WeChat's errmsg is not kept: it may echo input. */
export class WechatApiError extends ServiceError {
  constructor(
    readonly errcode: number,
    meaning: string,
  ) {
    super('upstream', `wechat: ${meaning} (errcode ${errcode})`);
  }
}

export const upstream = (message: string) => new ServiceError('upstream', `wechat: ${message}`);

/** A WeChat answer is a few hundred bytes; a longer one is not read into memory. */
export const MAX_ANSWER_BYTES = 16 * 1024;

async function readCapped(res: Response, tooLarge: () => Error): Promise<string> {
  if (!res.body) return '';
  // An answer that says it is too long is refused on its header, not read up to the cap.
  if (Number(res.headers.get('content-length')) > MAX_ANSWER_BYTES) {
    await res.body.cancel();
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += chunk.byteLength;
    // Leaving the loop cancels the stream: the rest is never read.
    if (size > MAX_ANSWER_BYTES) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Calls a WeChat API and answers the text of its answer, at most MAX_ANSWER_BYTES of it. The URL
 * may carry the app secret or the access token, so neither it nor anything of the request or
 * the answer (codes, phone numbers, tokens) ever goes into an error message: only what kind of
 * failure it was.
 */
export async function fetchText(
  url: URL,
  init: RequestInit,
  timeoutMs: number,
  tooLarge: () => Error = () => upstream(`answer is larger than ${MAX_ANSWER_BYTES} bytes`),
): Promise<string> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
    const text = await readCapped(res, tooLarge);
    if (!res.ok) throw upstream(`HTTP ${res.status} from WeChat`);
    return text;
  } catch (err) {
    if (err instanceof ServiceError) throw err;
    const name = (err as Error)?.name;
    if (name === 'TimeoutError' || name === 'AbortError') throw upstream(`no answer within ${timeoutMs} ms`);
    const code = ((err as Error)?.cause as NodeJS.ErrnoException | undefined)?.code;
    throw upstream(`unreachable${code ? ` (${code})` : ''}`);
  }
}

/** POSTs JSON to a WeChat server API and answers its JSON object (see fetchText). */
export async function postJson(url: URL, body: unknown, timeoutMs: number): Promise<Record<string, unknown>> {
  const text = await fetchText(
    url,
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) },
    timeoutMs,
  );
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw upstream('answer is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw upstream('answer is not an object');
  return parsed as Record<string, unknown>;
}

/** Throws the answer's errcode, if it has one other than 0, as a WechatApiError. */
export function checkErrcode(answer: Record<string, unknown>, meanings: Record<number, string>): void {
  const errcode = answer.errcode;
  if (errcode === undefined || errcode === 0) return;
  const n = typeof errcode === 'number' ? errcode : Number(errcode);
  if (!Number.isInteger(n)) throw upstream('answer has a malformed errcode');
  throw new WechatApiError(n, meanings[n] ?? 'request refused');
}
