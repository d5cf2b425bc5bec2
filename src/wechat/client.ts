import { ServiceError } from '../errors';
import { fetchText, MAX_ANSWER_BYTES } from './http';
import { isOpenid } from './openid';

export interface WechatSettings {
  appid: string;
  secret: string;
  apiBase: string;
  timeoutMs: number;
}

export interface WechatSession {
  openid: string;
  session_key: string;
  unionid?: string;
}

// What WeChat's errcodes mean to the caller; the msg goes back to the mini-program as is.
const ERRCODES: Record<number, string> = {
  40029: 'invalid js_code',
  40163: 'js_code already used',
  45011: 'rate limited by WeChat, retry later',
  40226: 'user blocked by WeChat risk control',
  [-1]: 'WeChat is busy',
};

const upstream = (message: string, cause?: unknown) => new ServiceError('upstream', `wechat: ${message}`, { cause });

/** WeChat answered, but with nothing this client can use: the caller's cue to warn (once). */
const MALFORMED = Symbol('malformed WeChat answer');
const malformed = (message: string) => upstream(message, MALFORMED);

/** True for the error of an answer that was not a usable jscode2session answer. */
export function isMalformedAnswer(err: unknown): boolean {
  return err instanceof ServiceError && err.cause === MALFORMED;
}

// A session_key is 24 base64 characters; it is stored in Redis, so its size has a bound.
const MAX_SESSION_KEY = 256;
/**
 * The jscode2session call. Its URL carries the app secret, so neither the URL nor WeChat's
 * answer (which holds session_key) is ever put into an error message or a log line.
 */
export class WechatClient {
  constructor(private readonly settings: WechatSettings) {}

  async code2Session(jsCode: string): Promise<WechatSession> {
    if (!this.settings.appid || !this.settings.secret) {
      throw upstream('WECHAT_APPID and WECHAT_SECRET are not configured');
    }
    try {
      return await this.attempt(jsCode);
    } catch (err) {
      // errcode -1 is WeChat's "system busy, try again": one retry is worth it, others are not.
      if (err instanceof ServiceError && (err.cause as { errcode?: number })?.errcode === -1) {
        return this.attempt(jsCode);
      }
      throw err;
    }
  }

  private async attempt(jsCode: string): Promise<WechatSession> {
    const url = new URL(`${this.settings.apiBase}/sns/jscode2session`);
    url.searchParams.set('appid', this.settings.appid);
    url.searchParams.set('secret', this.settings.secret);
    url.searchParams.set('js_code', jsCode);
    url.searchParams.set('grant_type', 'authorization_code');

    const text = await fetchText(url, {}, this.settings.timeoutMs, () =>
      malformed(`answer is larger than ${MAX_ANSWER_BYTES} bytes`),
    );

    // WeChat answers JSON labelled text/plain, so the content type is not trusted either way.
    // Nothing of an unusable answer is put in the message: it may hold a session_key.
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw malformed('answer is not JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw malformed('answer is not a JSON object');
    }
    const body = parsed as Record<string, unknown>;
    const errcode = body.errcode;
    if (errcode !== undefined && errcode !== 0) {
      if (typeof errcode !== 'number') throw malformed('answer has an errcode that is not a number');
      const meaning = ERRCODES[errcode] ?? 'request refused';
      throw upstream(`${meaning} (errcode ${errcode})`, { errcode });
    }
    if (!isOpenid(body.openid)) throw malformed('answer has no valid openid');
    if (typeof body.session_key !== 'string' || !body.session_key || body.session_key.length > MAX_SESSION_KEY) {
      throw malformed('answer has no valid session_key');
    }
    const session: WechatSession = { openid: body.openid, session_key: body.session_key };
    if (body.unionid !== undefined && body.unionid !== '') {
      if (!isOpenid(body.unionid)) throw malformed('answer has an invalid unionid');
      session.unionid = body.unionid;
    }
    return session;
  }
}
