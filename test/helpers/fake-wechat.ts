import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export type WechatReply = { status?: number; body?: unknown; raw?: string; delayMs?: number; hang?: boolean };

/** A POST the fake got: its URL (access_token in the query) and its parsed JSON body. */
export interface WechatCall {
  url: URL;
  body: Record<string, unknown>;
}

/**
 * Stands in for api.weixin.qq.com: answers /sns/jscode2session from a table keyed by js_code,
 * with content-type text/plain as the real one does, and records every request it got. It also
 * issues access tokens (/cgi-bin/stable_token, which hands out the current token until it is
 * revoked or has less than 5 minutes left, as the real one does) and exchanges phone codes
 * (/wxa/business/getuserphonenumber: each code works once, for a valid token only).
 */
export type Suggest = 'pass' | 'review' | 'risky';

export class FakeWechat {
  readonly requests: URL[] = [];
  /** Every msg_sec_check call. */
  readonly textCalls: WechatCall[] = [];
  /** Every media_check_async call, with the trace_id it was answered. */
  readonly mediaCalls: (WechatCall & { traceId: string })[] = [];
  /** msg_sec_check's verdict by text; 'pass' for any other. */
  readonly textVerdicts = new Map<string, Suggest>();
  /** When set, msg_sec_check and media_check_async fail this way instead of answering. */
  contentFailure?: 'errcode' | 'hang' | 'http500';
  /** Every stable_token call. */
  readonly tokenCalls: WechatCall[] = [];
  /** Every getuserphonenumber call. */
  readonly phoneCalls: WechatCall[] = [];
  /** Every token ever issued, in order. */
  readonly issuedTokens: string[] = [];
  /** The expires_in of the next tokens issued. */
  tokenTtlSeconds = 7200;
  /** How long stable_token takes to answer: widens the window in which callers race. */
  tokenDelayMs = 0;
  /** When set, stable_token answers this instead of a token. */
  tokenRefusal?: { errcode: number; errmsg: string };
  private readonly replies = new Map<string, WechatReply[]>();
  private readonly phoneCodes = new Map<string, string>();
  private readonly revoked = new Set<string>();
  /** Per appid, as WeChat keeps one current token per app. */
  private readonly current = new Map<string, { token: string; expiresAt: number }>();
  private readonly expiry = new Map<string, number>();
  private server?: Server;
  url = '';

  /** A getPhoneNumber code, good once, for this phone number. */
  phoneCode(code: string, phoneNumber: string): this {
    this.phoneCodes.set(code, phoneNumber);
    return this;
  }

  /** The last token issued (or `token`) stops working: APIs answer 40001, stable_token issues another. */
  revoke(token = this.issuedTokens.at(-1)): void {
    if (token) this.revoked.add(token);
  }

  /** Queue replies for a js_code; the last one repeats. */
  on(jsCode: string, ...replies: WechatReply[]): this {
    this.replies.set(jsCode, replies);
    return this;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    this.requests.push(url);
    if (req.method === 'POST' && POST_PATHS.has(url.pathname)) {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        let body: Record<string, unknown> = {};
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          // answered as WeChat would: a missing parameter
        }
        const call = { url, body };
        const reply = (answer: unknown) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(answer));
        };
        if (url.pathname === MSG_PATH || url.pathname === MEDIA_PATH) {
          if (this.contentFailure === 'hang') return; // never answers: the client's timeout must fire
          if (this.contentFailure === 'http500') return void res.writeHead(500).end('busy');
          reply(this.contentCheck(url, call));
        } else if (url.pathname === PHONE_PATH) {
          this.phoneCalls.push(call);
          reply(this.phoneNumber(url.searchParams.get('access_token') ?? '', body));
        } else {
          this.tokenCalls.push(call);
          const answer = this.stableToken(body);
          if (this.tokenDelayMs) setTimeout(() => reply(answer), this.tokenDelayMs);
          else reply(answer);
        }
      });
      return;
    }
    if (url.pathname !== '/sns/jscode2session') {
      res.writeHead(404).end();
      return;
    }
    const jsCode = url.searchParams.get('js_code') ?? '';
    const queue = this.replies.get(jsCode);
    const reply: WechatReply = (queue && queue.length > 1 ? queue.shift() : queue?.[0]) ?? {
      body: { errcode: 40029, errmsg: 'invalid code' },
    };
    if (reply.hang) return; // never answers: the client's timeout must fire
    const send = () => {
      res.writeHead(reply.status ?? 200, { 'content-type': 'text/plain' });
      res.end(reply.raw ?? JSON.stringify(reply.body));
    };
    if (reply.delayMs) setTimeout(send, reply.delayMs);
    else send();
  }

  private stableToken(body: Record<string, unknown>): unknown {
    if (body.grant_type !== 'client_credential' || typeof body.appid !== 'string' || !body.secret) {
      return { errcode: 40002, errmsg: 'invalid grant_type or missing appid/secret' };
    }
    if (body.force_refresh !== false) return { errcode: 40002, errmsg: 'this fake expects force_refresh false' };
    if (this.tokenRefusal) return this.tokenRefusal;
    const now = Date.now();
    const current = this.current.get(body.appid);
    if (!current || this.revoked.has(current.token) || current.expiresAt - now < 300_000) {
      const token = `ACCESS_TOKEN_${this.issuedTokens.length + 1}_${randomBytes(12).toString('hex')}`;
      const expiresAt = now + this.tokenTtlSeconds * 1000;
      this.issuedTokens.push(token);
      this.current.set(body.appid, { token, expiresAt });
      this.expiry.set(token, expiresAt);
      return { access_token: token, expires_in: this.tokenTtlSeconds };
    }
    return { access_token: current.token, expires_in: Math.floor((current.expiresAt - now) / 1000) };
  }

  /** null for a token WeChat takes, else its refusal. */
  private tokenFault(token: string): unknown {
    if (!this.issuedTokens.includes(token)) return { errcode: 40014, errmsg: 'invalid access_token' };
    if (this.revoked.has(token)) return { errcode: 40001, errmsg: 'invalid credential, access_token is invalid' };
    if (this.expiry.get(token)! <= Date.now()) return { errcode: 42001, errmsg: 'access_token expired' };
    return null;
  }

  /** msg_sec_check and media_check_async, v2, as WeChat documents their answers. */
  private contentCheck(url: URL, call: WechatCall): unknown {
    const fault = this.tokenFault(url.searchParams.get('access_token') ?? '');
    if (fault) return fault;
    const { body } = call;
    if (body.version !== 2 || body.scene !== 1 || typeof body.openid !== 'string') {
      return { errcode: 40003, errmsg: 'invalid openid or parameters' };
    }
    if (this.contentFailure === 'errcode') return { errcode: -1, errmsg: 'system error' };
    if (url.pathname === MEDIA_PATH) {
      if (typeof body.media_url !== 'string' || body.media_type !== 2) return { errcode: 40003, errmsg: 'bad media' };
      const traceId = `trace-${this.mediaCalls.length + 1}-${randomBytes(6).toString('hex')}`;
      this.mediaCalls.push({ ...call, traceId });
      return { errcode: 0, errmsg: 'ok', trace_id: traceId };
    }
    this.textCalls.push(call);
    if (typeof body.content !== 'string' || body.content === '') return { errcode: 44002, errmsg: 'empty content' };
    const suggest = this.textVerdicts.get(body.content) ?? 'pass';
    const label = suggest === 'pass' ? 100 : 20002;
    return {
      errcode: 0,
      errmsg: 'ok',
      result: { suggest, label },
      detail: [{ strategy: 'content_model', errcode: 0, suggest, label, prob: 90 }],
      trace_id: `text-${this.textCalls.length}`,
    };
  }

  private phoneNumber(token: string, body: Record<string, unknown>): unknown {
    const fault = this.tokenFault(token);
    if (fault) return fault;
    const code = typeof body.code === 'string' ? body.code : '';
    const phoneNumber = this.phoneCodes.get(code);
    if (phoneNumber === undefined || typeof body.openid !== 'string') {
      return { errcode: 40029, errmsg: 'invalid code' };
    }
    this.phoneCodes.delete(code);
    return {
      errcode: 0,
      errmsg: 'ok',
      phone_info: {
        phoneNumber,
        purePhoneNumber: phoneNumber.replace(/^\+\d+-?/, ''),
        countryCode: '86',
        watermark: { timestamp: Math.floor(Date.now() / 1000), appid: 'wx-fake' },
      },
    };
  }
}

const PHONE_PATH = '/wxa/business/getuserphonenumber';
const MSG_PATH = '/wxa/msg_sec_check';
const MEDIA_PATH = '/wxa/media_check_async';
const POST_PATHS = new Set(['/cgi-bin/stable_token', PHONE_PATH, MSG_PATH, MEDIA_PATH]);

/** A push field: a string or number, or (result) an object of them. */
export type PushField = string | number | Record<string, string | number>;

export interface PushOptions {
  /** 'json' (the default) or 'xml': the 数据格式 the developer chose. */
  format?: 'json' | 'xml';
  /** Secure mode: encrypt with this EncodingAESKey (43 characters). */
  aesKey?: string;
  /** The appid sealed into a secure-mode message; the pusher's own by default. */
  appid?: string;
  /** Unix seconds; now by default. */
  timestamp?: number;
  /** Sign with this token instead of the pusher's (a forger's). */
  token?: string;
  /** Replace the body as sent (after signing). */
  rawBody?: string | Buffer;
}

export interface PushAnswer {
  status: number;
  text: string;
}

/**
 * WeChat's side of the message push (消息推送): signs, and in secure mode encrypts, a message as
 * WeChat does, and POSTs it to the service's /wechat/push. The encrypt side of
 * src/wechat/push/crypto.ts, written again here from WeChat's description so that the test does
 * not check the service against itself.
 */
export class WechatPusher {
  constructor(
    readonly serviceUrl: string,
    readonly token: string,
    readonly appid: string,
  ) {}

  static sign(parts: string[]): string {
    return createHash('sha1').update(parts.sort().join('')).digest('hex');
  }

  /** base64(AES-256-CBC(16 random bytes, length (4 bytes BE), message, appid), PKCS#7 to 32 bytes). */
  static encrypt(message: string, aesKey: string, appid: string): string {
    const key = Buffer.from(`${aesKey}=`, 'base64');
    const body = Buffer.from(message, 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32BE(body.length);
    const plain = Buffer.concat([randomBytes(16), length, body, Buffer.from(appid, 'latin1')]);
    const pad = 32 - (plain.length % 32);
    const cipher = createCipheriv('aes-256-cbc', key, key.subarray(0, 16));
    cipher.setAutoPadding(false);
    return Buffer.concat([cipher.update(Buffer.concat([plain, Buffer.alloc(pad, pad)])), cipher.final()]).toString(
      'base64',
    );
  }

  /** A message in WeChat's JSON or XML format. */
  static format(fields: Record<string, PushField>, format: 'json' | 'xml'): string {
    if (format === 'json') return JSON.stringify(fields);
    const tag = (k: string, v: PushField): string =>
      typeof v === 'number'
        ? `<${k}>${v}</${k}>`
        : typeof v === 'string'
          ? `<${k}><![CDATA[${v}]]></${k}>`
          : `<${k}>${Object.entries(v)
              .map(([ik, iv]) => tag(ik, iv))
              .join('')}</${k}>`;
    return `<xml>${Object.entries(fields)
      .map(([k, v]) => tag(k, v))
      .join('')}</xml>`;
  }

  /** WeChat's verdict on a media_check_async trace (Event wxa_media_check), as it pushes it. */
  mediaVerdict(traceId: string, suggest: Suggest, opts: PushOptions = {}): Promise<PushAnswer> {
    return this.push(
      {
        Event: 'wxa_media_check',
        appid: this.appid,
        trace_id: traceId,
        version: 2,
        errcode: 0,
        errmsg: 'ok',
        result: { suggest, label: suggest === 'pass' ? 100 : 20002 },
      },
      opts,
    );
  }

  /** The query of a push: timestamp, nonce and signature (and the secure mode's). */
  query(opts: PushOptions = {}, encrypt?: string): URLSearchParams {
    const timestamp = String(opts.timestamp ?? Math.floor(Date.now() / 1000));
    const nonce = String(randomBytes(4).readUInt32BE());
    const token = opts.token ?? this.token;
    const q = new URLSearchParams({ signature: WechatPusher.sign([token, timestamp, nonce]), timestamp, nonce });
    if (encrypt !== undefined) {
      q.set('encrypt_type', 'aes');
      q.set('msg_signature', WechatPusher.sign([token, timestamp, nonce, encrypt]));
    }
    return q;
  }

  /** The URL check WeChat makes when the push URL is saved. */
  async verify(echostr: string, opts: PushOptions = {}): Promise<PushAnswer> {
    const q = this.query(opts);
    q.set('echostr', echostr);
    const res = await fetch(`${this.serviceUrl}/wechat/push?${q}`);
    return { status: res.status, text: await res.text() };
  }

  /** Pushes an event (ToUserName, CreateTime, MsgType filled in), signed as WeChat signs it. */
  async push(fields: Record<string, PushField>, opts: PushOptions = {}): Promise<PushAnswer> {
    const format = opts.format ?? 'json';
    const message = WechatPusher.format(
      {
        ToUserName: 'gh_fake',
        FromUserName: String(fields.OpenID ?? ''),
        CreateTime: Math.floor(Date.now() / 1000),
        MsgType: 'event',
        AppID: this.appid,
        ...fields,
      },
      format,
    );
    let body = message;
    let encrypt: string | undefined;
    if (opts.aesKey) {
      encrypt = WechatPusher.encrypt(message, opts.aesKey, opts.appid ?? this.appid);
      body = WechatPusher.format({ ToUserName: 'gh_fake', Encrypt: encrypt }, format);
    }
    return this.send(this.query(opts, encrypt), opts.rawBody ?? body, format);
  }

  async send(query: URLSearchParams, body: string | Buffer, format: 'json' | 'xml' = 'json'): Promise<PushAnswer> {
    const res = await fetch(`${this.serviceUrl}/wechat/push?${query}`, {
      method: 'POST',
      headers: { 'content-type': format === 'json' ? 'application/json' : 'text/xml' },
      body,
    });
    return { status: res.status, text: await res.text() };
  }
}
