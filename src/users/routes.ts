import { defineRoute, RawJson, type RouteSpec } from '../http/route';
import {
  emptyListOutput,
  jsCodeInput,
  loginInput,
  nullOutput,
  openidInput,
  openidOutput,
  parsePatch,
  updateInput,
  userOutput,
} from './schemas';
import type { UserService } from './service';

/**
 * The six routes of the API document. Each code table is the document's error table for that
 * route, keyed by failure kind (src/errors.ts); `other` is its "其他错误" code.
 */
export function userRoutes(users: UserService): RouteSpec[] {
  return [
    defineRoute({
      name: 'login',
      summary: 'Register a user (an existing openid answers the stored user, unchanged)',
      input: loginInput,
      output: userOutput,
      codes: { invalid: -1, other: -2 },
      handle: ({ openid, ...profile }) => users.register(openid, profile),
    }),
    defineRoute({
      name: 'getOpenid',
      summary: "Exchange a wx.login code for the user's openid (WeChat jscode2session)",
      input: jsCodeInput,
      output: openidOutput,
      codes: { invalid: -1, upstream: -2, other: -2 },
      handle: ({ js_code }) => users.openidFromCode(js_code),
    }),
    defineRoute({
      name: 'loginByOpenid',
      summary: 'Log in by openid: the user, from the cache when it can',
      input: openidInput,
      output: userOutput,
      codes: { invalid: -1, notFound: -2, other: -2 },
      handle: async ({ openid }) => new RawJson(await users.findJson(openid)),
    }),
    defineRoute({
      name: 'logout',
      summary: "Log out: forget the user's cached profile and session_key (idempotent)",
      input: openidInput,
      output: nullOutput,
      codes: { invalid: -1, other: -2 },
      handle: async ({ openid }) => {
        await users.logout(openid);
        return null;
      },
    }),
    defineRoute({
      name: 'get',
      summary: 'Get a user by openid',
      input: openidInput,
      output: userOutput,
      codes: { invalid: -1, duplicate: -2, other: -3, notFound: -4 },
      handle: async ({ openid }) => new RawJson(await users.findJson(openid)),
    }),
    defineRoute({
      name: 'update',
      summary: "Change a user's nick_name, avatar, gender or phone",
      input: updateInput,
      output: emptyListOutput,
      codes: { invalid: -1, notFound: -2, other: -2, badJson: -3, badUpdate: -4 },
      handle: async ({ user_id, update }) => {
        await users.update(user_id, parsePatch(update));
        return [];
      },
    }),
  ];
}
