import type { AccessTokenProvider } from './access-token';
import { checkErrcode, postJson, upstream } from './http';

const ERRCODES: Record<number, string> = {
  [-1]: 'WeChat is busy, ask the user again',
  40013: 'invalid appid',
  40029: 'invalid or used phone code',
  45011: 'rate limited by WeChat, retry later',
};

// What WeChat sends as phoneNumber: digits, with the country code (+, maybe a separator)
// abroad. At most 32 characters: the phone column's size.
const PHONE = /^(?=.{5,32}$)\+?[0-9]+(?:[ -][0-9]+)*$/;

/**
 * getuserphonenumber: a getPhoneNumber button's one-time code -> the user's phone number.
 * WeChat bills every successful call and a code works once, so a refused code (40029) is
 * never retried; only a rejected access token is (AccessTokenProvider.call). The code and the
 * number go into no error message and no log line.
 */
export class PhoneNumberApi {
  constructor(
    private readonly settings: { apiBase: string; timeoutMs: number },
    private readonly tokens: Pick<AccessTokenProvider, 'call'>,
  ) {}

  phoneNumber(code: string, openid: string): Promise<string> {
    return this.tokens.call(async (accessToken) => {
      const url = new URL(`${this.settings.apiBase}/wxa/business/getuserphonenumber`);
      url.searchParams.set('access_token', accessToken);
      const answer = await postJson(url, { code, openid }, this.settings.timeoutMs);
      checkErrcode(answer, ERRCODES);
      const info = answer.phone_info as { phoneNumber?: unknown } | undefined;
      const phone = info?.phoneNumber;
      if (typeof phone !== 'string' || !PHONE.test(phone)) throw upstream('answer has no phone number');
      return phone;
    });
  }
}
