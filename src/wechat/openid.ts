/**
 * What an openid looks like, wherever one enters: a request field or WeChat's answer. WeChat's
 * are 28 characters of the base64url alphabet; 1-64 leaves room for other apps' ids and fits
 * users.openid (VARCHAR(64)). The alphabet has no `{` or `}`, so an openid is always the whole
 * hash tag of its Redis keys, and every key of a user lands in one cluster slot.
 */
export const OPENID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';
const OPENID = new RegExp(OPENID_PATTERN);

export function isOpenid(value: unknown): value is string {
  return typeof value === 'string' && OPENID.test(value);
}
