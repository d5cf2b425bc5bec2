import { ServiceError } from '../errors';

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

    let text: string;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(this.settings.timeoutMs) });
      text = await res.text();
      if (!res.ok) throw upstream(`HTTP ${res.status} from WeChat`);
    } catch (err) {
      if (err instanceof ServiceError) throw err;
      const name = (err as Error)?.name;
      if (name === 'TimeoutError' || name === 'AbortError') {
        throw upstream(`no answer within ${this.settings.timeoutMs} ms`);
      }
      const code = ((err as Error)?.cause as NodeJS.ErrnoException | undefined)?.code;
      throw upstream(`unreachable${code ? ` (${code})` : ''}`);
    }

    // WeChat answers JSON labelled text/plain, so the content type is not trusted either way.
    let body: Partial<WechatSession> & { errcode?: number; errmsg?: string };
    try {
      body = JSON.parse(text);
    } catch {
      throw upstream('answer is not JSON');
    }
    if (body.errcode) {
      const meaning = ERRCODES[body.errcode] ?? 'request refused';
      throw upstream(`${meaning} (errcode ${body.errcode})`, { errcode: body.errcode });
    }
    if (typeof body.openid !== 'string' || typeof body.session_key !== 'string' || !body.openid) {
      throw upstream('answer has no openid or session_key');
    }
    const session: WechatSession = { openid: body.openid, session_key: body.session_key };
    if (typeof body.unionid === 'string' && body.unionid) session.unionid = body.unionid;
    return session;
  }
}
