import type { AccessTokenProvider } from './access-token';
import { checkErrcode, postJson, upstream } from './http';

/** WeChat's verdict on a text or an image (v2 `result.suggest`). */
export type Suggest = 'pass' | 'review' | 'risky';

const SUGGESTS = new Set<string>(['pass', 'review', 'risky']);

export const isSuggest = (value: unknown): value is Suggest => typeof value === 'string' && SUGGESTS.has(value);

const ERRCODES: Record<number, string> = {
  [-1]: 'WeChat is busy',
  40003: 'invalid openid (the user must have opened the mini-program within two hours)',
  44002: 'empty content',
  44991: 'rate limited by WeChat, retry later',
  45009: 'daily content-check quota used up',
  61010: 'the user has not opened the mini-program within two hours',
};

// The v2 scene of a profile (资料): nickname and avatar.
const PROFILE_SCENE = 1;
// A trace_id is a short token of WeChat's; anything else is not kept as a Redis key part.
const TRACE_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * WeChat's content security APIs, v2: msgSecCheck (a text, answered at once) and
 * mediaCheckAsync (an image WeChat downloads; the verdict comes later by the message push).
 * Both go through the shared access token (AccessTokenProvider.call refreshes a rejected one);
 * neither the text nor the token goes into an error message.
 */
export class SecurityApi {
  constructor(
    private readonly settings: { apiBase: string; timeoutMs: number },
    private readonly tokens: Pick<AccessTokenProvider, 'call'>,
  ) {}

  msgSecCheck(content: string, openid: string): Promise<Suggest> {
    return this.tokens.call(async (accessToken) => {
      const answer = await postJson(
        this.url('/wxa/msg_sec_check', accessToken),
        { content, version: 2, scene: PROFILE_SCENE, openid },
        this.settings.timeoutMs,
      );
      checkErrcode(answer, ERRCODES);
      const suggest = (answer.result as { suggest?: unknown } | undefined)?.suggest;
      if (!isSuggest(suggest)) throw upstream('msg_sec_check answer has no result.suggest');
      return suggest;
    });
  }

  /** Asks WeChat to check the image at a public URL; answers the trace_id its verdict will carry. */
  mediaCheckAsync(mediaUrl: string, openid: string): Promise<string> {
    return this.tokens.call(async (accessToken) => {
      const answer = await postJson(
        this.url('/wxa/media_check_async', accessToken),
        { media_url: mediaUrl, media_type: 2, version: 2, scene: PROFILE_SCENE, openid },
        this.settings.timeoutMs,
      );
      checkErrcode(answer, ERRCODES);
      const traceId = answer.trace_id;
      if (typeof traceId !== 'string' || !TRACE_ID.test(traceId)) {
        throw upstream('media_check_async answer has no valid trace_id');
      }
      return traceId;
    });
  }

  private url(path: string, accessToken: string): URL {
    const url = new URL(`${this.settings.apiBase}${path}`);
    url.searchParams.set('access_token', accessToken);
    return url;
  }
}
