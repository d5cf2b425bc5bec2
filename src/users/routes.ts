import type { RouteSpec } from '../http/route';
import { RawJson } from '../http/route';
import { parseJsCode, parseLogin, parseOpenid, parsePatch, parseUpdateRequest } from './schemas';
import type { UserService } from './service';

/**
 * The six routes of the API document. Each code table is the document's error table for that
 * route, keyed by failure kind (src/errors.ts); `other` is its "其他错误" code.
 */
export function userRoutes(users: UserService): RouteSpec[] {
  return [
    {
      name: 'login',
      codes: { invalid: -1, other: -2 },
      async handle(body) {
        const { openid, ...profile } = parseLogin(body);
        return users.register(openid, profile);
      },
    },
    {
      name: 'getOpenid',
      codes: { invalid: -1, other: -2 },
      async handle(body) {
        const { js_code } = parseJsCode(body);
        return users.openidFromCode(js_code);
      },
    },
    {
      name: 'loginByOpenid',
      codes: { invalid: -1, notFound: -2, other: -2 },
      async handle(body) {
        const { openid } = parseOpenid(body);
        return new RawJson(await users.findJson(openid));
      },
    },
    {
      name: 'logout',
      codes: { invalid: -1, other: -2 },
      async handle(body) {
        const { openid } = parseOpenid(body);
        await users.logout(openid);
        return null;
      },
    },
    {
      name: 'get',
      codes: { invalid: -1, duplicate: -2, other: -3, notFound: -4 },
      async handle(body) {
        const { openid } = parseOpenid(body);
        return new RawJson(await users.findJson(openid));
      },
    },
    {
      name: 'update',
      codes: { invalid: -1, notFound: -2, other: -2, badJson: -3, badUpdate: -4 },
      async handle(body) {
        const { user_id, update } = parseUpdateRequest(body);
        await users.update(user_id, parsePatch(update));
        return [];
      },
    },
  ];
}
