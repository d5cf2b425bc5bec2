import Joi from 'joi';
import { ServiceError } from '../errors';
import { isOpenid, OPENID_PATTERN } from '../wechat/openid';
import type { Profile } from './model';

// Every schema is compiled once, at module load: a request only runs .validate().

// C0 and C1 control characters (NUL included) have no business in a profile field. Kept as
// a character-class body so that the API page's JSON Schema pattern says the same thing.
const CONTROL_CLASS = '\\u0000-\\u001f\\u007f-\\u009f';
const CONTROL = new RegExp(`[${CONTROL_CLASS}]`);
const WHITESPACE = /\s/;
// U+FFFD is what the body parser's (lenient) UTF-8 decoder puts where bytes were not UTF-8.
// A field holding one was damaged on its way here, so it is refused rather than stored.
const REPLACEMENT = '\ufffd';

// What a displayed name may not hold (text(max, { display: true })): the bidirectional
// embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), which make a name read
// reversed or spill into the text around it, and the zero-width space and byte-order mark
// (U+200B, U+FEFF), which make two names look alike. U+200D (zero-width joiner) stays:
// emoji sequences (👨‍👩‍👧) are built with it.
const INVISIBLE_CLASS = '\\u200b\\u202a-\\u202e\\u2066-\\u2069\\ufeff';
const INVISIBLE = new RegExp(`[${INVISIBLE_CLASS}]`);

function codePoints(value: string): number {
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff) n++;
  }
  return n;
}

/** Why a name is refused for how it would show (blank, reversed, look-alike), or null. */
function displayFault(value: string): string | null {
  if (INVISIBLE.test(value)) return 'contains a zero-width space or a bidirectional control';
  if (value.trim() === '') return 'is blank';
  return null;
}

/**
 * What text() refuses beyond joi's own string rules: the reason, 'max' for too many code
 * points, or null for a good value. One function for the schema and for the patch shortcut.
 */
function textFault(value: string, max: number, opts: TextOptions = {}): string | 'max' | null {
  if (!value.isWellFormed()) return 'is not valid Unicode';
  if (CONTROL.test(value)) return 'contains control characters';
  if (value.includes(REPLACEMENT)) return 'is not valid UTF-8 (it holds U+FFFD)';
  if (opts.noSpaces && WHITESPACE.test(value)) return 'contains white space';
  if (opts.display) {
    const shown = displayFault(value);
    if (shown) return shown;
  }
  if (codePoints(value) > max) return 'max';
  return null;
}

/** An object a body field may be (a JSON object, or a parsed form), not an array nor null. */
function isPlainObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Longest nick_name and phone, in code points: the schema's and the patch shortcut's. */
const NICK_NAME_MAX = 64;
const NICK_NAME_TEXT: TextOptions = { display: true };
const PHONE_MAX = 32;

interface TextOptions {
  /** No white space at all (codes, tokens). */
  noSpaces?: boolean;
  /** A name shown to other users: not blank, no invisible or direction-changing characters. */
  display?: boolean;
}

/** text(max, opts) as a plain check: a string that text(max, opts)'s schema takes unchanged. */
function isText(value: unknown, max: number, opts: TextOptions = {}): value is string {
  return (
    typeof value === 'string' && value.length >= 1 && value.length <= max * 2 && textFault(value, max, opts) === null
  );
}

/**
 * text()'s rules as a JSON Schema pattern, for the API page. Without lookahead (test generators
 * do not take it): a display name is its characters around one that is not white space.
 */
function textPattern(opts: TextOptions): string {
  const refused = `${CONTROL_CLASS}\\ufffd${opts.noSpaces ? '\\s' : ''}${opts.display ? INVISIBLE_CLASS : ''}`;
  return opts.display ? `^[^${refused}]*[^${refused}\\s][^${refused}]*$` : `^[^${refused}]+$`;
}

/**
 * A string of 1..max characters counted as Unicode code points, the way MySQL counts a
 * utf8mb4 VARCHAR: an emoji is one character there but two UTF-16 units in JS. JSON Schema
 * counts code points too, so the API page gets `max` as its maxLength (the joi max of 2*max
 * UTF-16 units is only a cheap first cut).
 */
function text(max: number, opts: TextOptions = {}) {
  // helpers.message() compiles its template only when it fails. A .messages() on the schema
  // would instead make joi merge and recompile preferences on every validate() of the field.
  return Joi.string()
    .min(1)
    .max(max * 2)
    .custom((value: string, helpers) => {
      const fault = textFault(value, max, opts);
      if (fault === 'max') return helpers.error('string.max', { limit: max });
      if (fault) return helpers.message({ custom: `{{#label}} ${fault}` });
      return value;
    })
    .meta({
      openapi: {
        maxLength: max,
        pattern: textPattern(opts),
      },
    });
}

export const DATE_TIME = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/;

export const fields = {
  openid: Joi.string()
    .min(1)
    .max(64)
    .custom((value: string, helpers) =>
      isOpenid(value) ? value : helpers.message({ custom: '{{#label}} may hold only A-Z a-z 0-9 _ -' }),
    )
    .meta({ openapi: { pattern: OPENID_PATTERN } })
    .description("The user's openid: 1-64 characters of A-Z a-z 0-9 _ - (WeChat's have 28), case-sensitive")
    .example('oAbCdEfGhIjKlMnOpQrStUvWxYz0'),
  nick_name: text(NICK_NAME_MAX, NICK_NAME_TEXT)
    .description(
      'Display name: 1-64 characters (an emoji counts as one), not blank, without zero-width spaces ' +
        '(U+200B, U+FEFF) or bidirectional controls (U+202A-U+202E, U+2066-U+2069)',
    )
    .example('张三'),
  avatar: Joi.string()
    .max(512)
    .uri({ scheme: ['http', 'https'] })
    .description('Avatar URL, http or https')
    .example('https://example.com/media/avatar/1.jpg'),
  gender: Joi.number().integer().valid(0, 1).description('0 or 1 (which is which is up to the front end)').example(1),
  phone: text(PHONE_MAX)
    .description('Contact string, 1-32 characters (not necessarily a phone number)')
    .example('12312312312'),
  // users.id is BIGINT UNSIGNED; past 2^53 it would not survive a JSON client (repository.ts).
  user_id: Joi.number().integer().min(1).max(Number.MAX_SAFE_INTEGER).description('Row id of the user').example(1),
  js_code: text(128, { noSpaces: true })
    .description('The code wx.login gave the mini-program')
    .example('0a1B2c3D4e5F6g'),
  unionid: Joi.string()
    .allow(null)
    .description("WeChat's unionid of the user; null until WeChat (or the gateway) has told it")
    .example('oUnIoNiD0123456789abcdefghij'),
};

export interface OpenidInput {
  openid: string;
}
/**
 * Who a login is for: an openid, a js_code, or neither when a trusted gateway says it. The
 * identity guard (http/identity.ts) leaves the openid it settled on in `openid`, and the
 * unionid the proof carried, if any, in `unionid` (never read from the body).
 */
export interface IdentityInput {
  openid?: string;
  js_code?: string;
  unionid?: string;
}
export type LoginInput = Profile & IdentityInput;
export interface UpdateInput {
  user_id: number;
  update: unknown;
}
export interface JsCodeInput {
  js_code: string;
}

export const openidInput = Joi.object<OpenidInput>({ openid: fields.openid.required() });

const identityFields = {
  openid: fields.openid.description(
    "The user's openid. Alone it proves nothing: in strict mode (AUTH_MODE=token) send a js_code, " +
      'a session token getOpenid issued for it, or call through the trusted gateway',
  ),
  js_code: fields.js_code.description(
    'A wx.login code, in place of (or beside) openid: the service asks WeChat whose it is',
  ),
};

export const identityInput = Joi.object<IdentityInput>(identityFields);

/**
 * The body a mini-program sends on nearly every launch, `{"openid": "..."}`, checked without
 * joi: joi's validate() costs more CPU than the rest of the cached login's own code (measured
 * in the benchmark, docs/performance.md). It answers only when the body holds an openid and
 * none of the schema's other keys, and then exactly what the schema would answer; for anything
 * else it answers undefined and joi decides, so every error message is still joi's.
 * test/users/fast-input.test.ts holds it to the schema on generated bodies.
 */
export function openidShortcut(schema: Joi.ObjectSchema): (body: unknown) => OpenidInput | undefined {
  const known = new Set(Object.keys((schema.describe() as { keys?: object }).keys ?? {}));
  if (!known.has('openid')) throw new Error('openidShortcut: the schema has no openid');
  return (body) => {
    if (!isPlainObject(body)) return undefined;
    let openid: unknown;
    for (const key of Object.keys(body)) {
      if (key === 'openid') openid = (body as { openid?: unknown }).openid;
      // Unknown keys are ignored by the schema too (allowUnknown); a known one needs joi.
      else if (known.has(key)) return undefined;
    }
    return isOpenid(openid) ? { openid } : undefined;
  };
}

export const loginInput = Joi.object<LoginInput>({
  ...identityFields,
  nick_name: fields.nick_name.required(),
  avatar: fields.avatar.required(),
  gender: fields.gender.required(),
  phone: fields.phone.required(),
});

export const jsCodeInput = Joi.object<JsCodeInput>({ js_code: fields.js_code.required() });

export interface PhoneCodeInput {
  code: string;
}
export const phoneCodeInput = Joi.object<PhoneCodeInput>({
  code: text(128, { noSpaces: true })
    .required()
    .description("The one-time code of a getPhoneNumber button's event (e.detail.code), valid 5 minutes")
    .example('e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144'),
});

export interface DeleteAccountInput {
  js_code?: string;
}
// Optional here so that a missing code is -10 (not proven) rather than -1, as a stale one is.
export const deleteAccountInput = Joi.object<DeleteAccountInput>({
  js_code: fields.js_code.description(
    'The code of a fresh wx.login of the same openid as the token (required: without it, -10)',
  ),
});

/** The avatar route's form has its file only; nothing is read from a JSON body. */
export const noInput = Joi.object({});

export interface TokenInput {
  token: string;
}
export const tokenInput = Joi.object<TokenInput>({
  token: Joi.string()
    .max(256)
    .required()
    .description('A session token, as login, loginByOpenid or getOpenid gave it')
    .example('q3Z0v8c2kVZ1yQm6Xf0bR9sT4uW7aE5d'),
});

export const patchSchema = Joi.object<Partial<Profile>>({
  nick_name: fields.nick_name,
  avatar: fields.avatar,
  gender: fields.gender,
  phone: fields.phone,
})
  .min(1)
  .unknown(false)
  .messages({ 'object.unknown': '{{#label}} may not be changed' });

// Preferences on the root schema are merged once and cached by joi; passed to validate() they
// would be merged (and the messages above recompiled) on every call.
const patchValidator = patchSchema.prefs({ abortEarly: true, convert: true });

export const updateInput = Joi.object<UpdateInput>({
  user_id: fields.user_id.required(),
  // Documented as an object or a string holding JSON; any other present value is accepted
  // here so that parsePatch can answer it with -3 or -4, as the document's table says. The
  // API page shows what a client should send.
  update: Joi.alternatives(Joi.object(), Joi.string().allow(''), Joi.any())
    .invalid(null)
    .required()
    .meta({
      documentAs: Joi.alternatives(
        patchSchema,
        Joi.string().description('the same object as a JSON string').example('{"phone":"13333333333"}'),
      )
        .description('The fields to change: an object, or a string holding its JSON')
        .example({ phone: '13333333333' }),
    }),
});

/**
 * The update body as clients send it, `{"user_id": <n>, "update": <object or JSON text>}`,
 * without joi (see openidShortcut): undefined for anything else, which joi then decides.
 */
export function updateShortcut(body: unknown): UpdateInput | undefined {
  if (!isPlainObject(body)) return undefined;
  const { user_id: userId, update } = body as { user_id?: unknown; update?: unknown };
  if (typeof userId !== 'number' || !Number.isSafeInteger(userId) || userId < 1) return undefined;
  return isPlainObject(update) || typeof update === 'string' ? { user_id: userId, update } : undefined;
}

/**
 * A patch of nick_name, phone and gender, the fields a profile page edits, checked without
 * joi: the patch patchSchema would answer, or undefined to let it decide (an avatar URL, a
 * field it refuses, a value it would convert).
 */
export function patchShortcut(value: object): Partial<Profile> | undefined {
  const patch: Partial<Profile> = {};
  let fields = 0;
  for (const key of Object.keys(value)) {
    const field = (value as Record<string, unknown>)[key];
    if (key === 'nick_name' && isText(field, NICK_NAME_MAX, NICK_NAME_TEXT)) patch.nick_name = field;
    else if (key === 'phone' && isText(field, PHONE_MAX)) patch.phone = field;
    else if (key === 'gender' && (Object.is(field, 0) || field === 1)) patch.gender = field as 0 | 1;
    else return undefined;
    fields++;
  }
  return fields > 0 ? patch : undefined;
}

// --- answers (data of code 0), for the API page and the tests; not checked at run time --------

const dateTime = (what: string) =>
  Joi.string()
    .pattern(DATE_TIME)
    .description(`${what}, YYYY-MM-DD HH:mm:ss in TIME_ZONE`)
    .example('2020-03-26 11:34:29');

export const userOutput = Joi.object({
  user_id: fields.user_id.required(),
  openid: fields.openid.required(),
  unionid: fields.unionid,
  // '' once WeChat has said the user withdrew it or that it was cleaned (/wechat/push): the
  // document's fields stay strings.
  nick_name: fields.nick_name
    .allow('')
    .required()
    .description("Display name: 1-64 characters (an emoji counts as one), or '' once WeChat withdrew or cleaned it"),
  avatar: fields.avatar
    .allow('')
    .required()
    .description("Avatar URL, http or https, or '' once WeChat withdrew or cleaned it"),
  gender: fields.gender.required(),
  phone: fields.phone
    .allow('')
    .required()
    .description(
      "Contact string, 1-32 characters (not necessarily a phone number), or '' once the user withdrew it in WeChat",
    ),
  ctime: dateTime('Created').required(),
  mtime: dateTime('Last modified').required(),
})
  .description('The user')
  .meta({ component: 'User' });

const sessionFields = {
  token: Joi.string()
    .pattern(/^[A-Za-z0-9_-]{32}$/)
    .description('Session bearer token (32 base64url characters, 174 random bits); absent when Redis is unavailable')
    .example('q3Z0v8c2kVZ1yQm6Xf0bR9sT4uW7aE5d'),
  token_expires_at: Joi.number()
    .integer()
    .description("The token's absolute expiry, Unix seconds (idle sessions end earlier)")
    .example(1796254800),
};

export const userSessionOutput = userOutput
  .keys(sessionFields)
  .description('The user, and a new session')
  .meta({ component: 'UserSession' });

export const sessionUserOutput = userOutput
  .keys({ token_expires_at: sessionFields.token_expires_at.required() })
  .description("The session's user, and when the session ends")
  .meta({ component: 'SessionUser' });

export const openidOutput = Joi.object({
  openid: fields.openid.required(),
  unionid: Joi.string().description('Present when WeChat sends one').example('oUnIoNiD0123'),
  token: sessionFields.token.required(),
  token_expires_at: sessionFields.token_expires_at.required(),
}).meta({ component: 'Openid' });

export const nullOutput = Joi.valid(null).description('null');

export const exportOutput = Joi.object({
  user: userOutput.required(),
  sessions: Joi.array()
    .items(
      Joi.object({
        issued_at: Joi.number().integer().required().description('When the session was opened, Unix seconds'),
        expires_at: Joi.number().integer().required().description('Its absolute expiry, Unix seconds'),
        idle_timeout: Joi.number().integer().required().description('Seconds without use after which it ends earlier'),
      }),
    )
    .required()
    .description('The live sessions, oldest first; never their tokens')
    .example([{ issued_at: 1795650000, expires_at: 1796254800, idle_timeout: 172800 }]),
  session_key_held: Joi.boolean()
    .required()
    .description("Whether WeChat's session_key for the user is held (server-side only); never its value")
    .example(true),
  avatar_stored_here: Joi.boolean()
    .required()
    .description('Whether user.avatar is a file this service stores (removed with the account)')
    .example(false),
})
  .description('Everything the service holds about the user')
  .meta({ component: 'DataExport' });

export const emptyListOutput = Joi.array().length(0).description('an empty list, as in the document').example([]);

/**
 * The document lets `update` arrive as an object or as a string holding JSON: a string that
 * does not parse is -3 (badJson); anything else unusable is -4 (badUpdate).
 */
export function parsePatch(update: unknown): Partial<Profile> {
  let value = update;
  if (typeof update === 'string') {
    try {
      value = JSON.parse(update);
    } catch {
      throw new ServiceError('badJson', 'update is not valid JSON');
    }
  }
  if (!isPlainObject(value)) {
    throw new ServiceError('badUpdate', 'update must be a JSON object');
  }
  const fast = patchShortcut(value);
  if (fast) return fast;
  // A name refused for how it would show is -1 here as on login, on every route that stores
  // one; any other value update cannot apply stays -4 (badUpdate).
  const name: unknown = (value as { nick_name?: unknown }).nick_name;
  const shown = typeof name === 'string' ? displayFault(name) : null;
  if (shown) throw new ServiceError('invalid', `"nick_name" ${shown}`);
  const { error, value: patch } = patchValidator.validate(value);
  if (error) throw new ServiceError('badUpdate', error.message);
  return patch;
}
