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

/**
 * POSTs JSON to a WeChat server API and answers its JSON. The URL may carry the access token,
 * so neither the URL nor the request or answer bodies (codes, phone numbers, tokens) ever go
 * into an error message: only what kind of failure it was.
 */
export async function postJson(url: URL, body: unknown, timeoutMs: number): Promise<Record<string, unknown>> {
  let text: string;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await res.text();
    if (!res.ok) throw upstream(`HTTP ${res.status} from WeChat`);
  } catch (err) {
    if (err instanceof ServiceError) throw err;
    const name = (err as Error)?.name;
    if (name === 'TimeoutError' || name === 'AbortError') throw upstream(`no answer within ${timeoutMs} ms`);
    const code = ((err as Error)?.cause as NodeJS.ErrnoException | undefined)?.code;
    throw upstream(`unreachable${code ? ` (${code})` : ''}`);
  }
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
