import { requestToken, sessionOf } from '../http/auth';
import { defineRoute, RawJson, type RouteSpec } from '../http/route';
import { leaveShedder } from '../http/shed';
import type { ProfileFlows } from './flows';
import type { AccountRights } from './rights';
import {
  deleteAccountInput,
  emptyListOutput,
  exportOutput,
  identityInput,
  jsCodeInput,
  loginInput,
  noInput,
  nullOutput,
  openidInput,
  openidOutput,
  openidShortcut,
  parsePatch,
  phoneCodeInput,
  sessionUserOutput,
  tokenInput,
  updateInput,
  updateShortcut,
  userOutput,
  userSessionOutput,
} from './schemas';
import type { UserService } from './service';

/**
 * The six routes of the API document, and /session for services not written in Node. Each
 * code table is the document's error table for that route, keyed by failure kind
 * (src/errors.ts); `other` is its "其他错误" code. -10 (no valid token, strict mode) and 429
 * (rate limited) are common to all (http/route.ts). bindPhone and avatar are WeChat's own
 * flows (not in the document), for the user of a session in every mode. Every route is rate
 * limited (the default).
 */
export function userRoutes(users: UserService, flows: ProfileFlows, accountRights?: AccountRights): RouteSpec[] {
  // Absent where only the specs are read (the API page, the OpenAPI document, their tests).
  const rights = (): AccountRights => {
    if (!accountRights) throw new Error('the account routes were mounted without AccountRights');
    return accountRights;
  };
  return [
    defineRoute({
      name: 'login',
      summary:
        'Register a user (an existing openid answers the stored user, unchanged) and open a session ' +
        "(an existing user's live session, presented as Bearer, is kept)",
      input: loginInput,
      output: userSessionOutput,
      codes: { invalid: -1, upstream: -2, other: -2, contentRefused: -11 },
      identifies: true,
      // A first login may cost two WeChat content checks (the nickname and the avatar), which
      // WeChat meters per app: a client spends its budget twice as fast, as update does.
      rateCost: 2,
      handle: ({ openid, unionid, js_code: _, ...profile }, ctx) =>
        users.register(openid!, profile, unionid, requestToken(ctx)),
    }),
    defineRoute({
      name: 'getOpenid',
      summary: "Exchange a wx.login code for the user's openid (WeChat jscode2session) and open a session",
      input: jsCodeInput,
      output: openidOutput,
      codes: { invalid: -1, upstream: -2, other: -2 },
      handle: ({ js_code }) => users.openidFromCode(js_code),
    }),
    defineRoute({
      name: 'loginByOpenid',
      summary:
        'Log in by openid (or js_code): the user (from the cache when it can) and a session: the one ' +
        'the request presents (Bearer) when it is a live session of this user, kept and slid, else a new one',
      input: identityInput,
      fastInput: openidShortcut(identityInput),
      output: userSessionOutput,
      codes: { invalid: -1, notFound: -2, upstream: -2, other: -2 },
      identifies: true,
      handle: async ({ openid, unionid }, ctx) =>
        new RawJson(await users.loginByOpenid(openid!, unionid, requestToken(ctx))),
    }),
    defineRoute({
      name: 'logout',
      summary: "Log out: end all the user's sessions, forget its cached profile and session_key (idempotent)",
      input: openidInput,
      output: nullOutput,
      codes: { invalid: -1, other: -2 },
      owner: ({ openid }) => ({ openid }),
      handle: async ({ openid }) => {
        await users.logout(openid);
        return null;
      },
    }),
    defineRoute({
      name: 'get',
      summary: 'Get a user by openid',
      input: openidInput,
      fastInput: openidShortcut(openidInput),
      output: userOutput,
      codes: { invalid: -1, duplicate: -2, other: -3, notFound: -4 },
      owner: ({ openid }) => ({ openid }),
      handle: async ({ openid }) => new RawJson(await users.get(openid)),
    }),
    defineRoute({
      name: 'update',
      summary: "Change a user's nick_name, avatar, gender or phone",
      input: updateInput,
      fastInput: updateShortcut,
      output: emptyListOutput,
      codes: { invalid: -1, notFound: -2, other: -2, badJson: -3, badUpdate: -4, contentRefused: -11 },
      owner: ({ user_id }) => ({ user_id }),
      // A write, and -2 against 0 tells whether a user_id exists: half the pace of a read, so
      // a client cannot pass RATE_LIMIT_IP updates in any span shorter than the window.
      rateCost: 2,
      handle: async ({ user_id, update }) => {
        await users.edit(user_id, parsePatch(update));
        return [];
      },
    }),
    defineRoute({
      name: 'session',
      summary: "The user of a session token, with the token's expiry (for sibling services)",
      input: tokenInput,
      output: sessionUserOutput,
      codes: { invalid: -1, notFound: -2, other: -2, unauthenticated: -10 },
      handle: async ({ token }) => new RawJson(await users.sessionUser(token)),
    }),
    defineRoute({
      name: 'bindPhone',
      summary:
        "Set the session user's phone from a getPhoneNumber button's code (WeChat getuserphonenumber); " +
        'answers the user',
      input: phoneCodeInput,
      output: userOutput,
      codes: { invalid: -1, upstream: -2, other: -3, notFound: -4, unauthenticated: -10 },
      session: 'required',
      handle: async ({ code }, ctx) => new RawJson(await flows.bindPhone(sessionOf(ctx), code)),
    }),
    defineRoute({
      name: 'avatar',
      summary:
        "Upload the session user's avatar (chooseAvatar + wx.uploadFile): re-encoded, at most 512 px square, " +
        'no metadata; answers the user',
      input: noInput,
      output: userOutput,
      codes: { invalid: -1, other: -3, notFound: -4, unauthenticated: -10 },
      session: 'required',
      // A decode costs up to a few hundred ms of a core: a tenth of a client's pace (60 a
      // minute at the default RATE_LIMIT_IP), which a user changing an avatar never nears. It
      // also bounds what a client spends of WeChat's image checks (metered per app).
      rateCost: 10,
      multipart: {
        file: 'file',
        description: 'A JPEG, PNG or WebP image (decided from its content, not its name)',
        maxBytes: flows.avatarMaxBytes,
      },
      handle: async (_input, ctx) => {
        try {
          return new RawJson(await flows.setAvatar(sessionOf(ctx), ctx.req, () => leaveShedder(ctx)));
        } catch (err) {
          // An upload refused half-read: the rest is not read, so the connection cannot be reused.
          if (!ctx.req.complete) ctx.set('Connection', 'close');
          // A client too slow to send is not waited for to read: cut once the 408 is written.
          if ((err as { status?: number }).status === 408) ctx.res.once('finish', () => ctx.req.socket.destroy());
          throw err;
        }
      },
    }),
    defineRoute({
      name: 'deleteAccount',
      summary:
        "Delete the session user's account for good (PIPL art. 47): profile, sessions, session_key, avatar " +
        'files. Needs the token AND a fresh wx.login js_code of the same openid, in every mode',
      input: deleteAccountInput,
      output: nullOutput,
      codes: { invalid: -1, upstream: -2, other: -2, unauthenticated: -10 },
      session: 'required',
      // Each call asks WeChat for the code: as dear as a write.
      rateCost: 2,
      handle: async ({ js_code }, ctx) => {
        await rights().deleteAccount(sessionOf(ctx), js_code);
        return null;
      },
    }),
    defineRoute({
      name: 'exportData',
      summary:
        'A copy of everything held about the session user (PIPL art. 45): the profile with the full phone, ' +
        'the live sessions (never a token), whether a session_key is held (never its value)',
      input: noInput,
      output: exportOutput,
      codes: { invalid: -1, other: -2, notFound: -4, unauthenticated: -10 },
      session: 'required',
      handle: (_input, ctx) => rights().exportData(sessionOf(ctx)),
    }),
  ];
}
