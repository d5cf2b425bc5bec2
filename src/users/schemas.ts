import Joi from 'joi';
import { ServiceError } from '../errors';
import type { Profile } from './model';

// Every schema is compiled once, at module load: a request only runs .validate().

// C0 and C1 control characters (NUL included) have no business in a profile field.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const WHITESPACE = /\s/;

function codePoints(value: string): number {
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff) n++;
  }
  return n;
}

/**
 * A string of 1..max characters counted as Unicode code points, the way MySQL counts a
 * utf8mb4 VARCHAR: an emoji is one character there but two UTF-16 units in JS.
 */
function text(max: number, opts: { noSpaces?: boolean } = {}) {
  return Joi.string()
    .min(1)
    .max(max * 2)
    .custom((value: string, helpers) => {
      if (!value.isWellFormed()) return helpers.error('text.unpaired');
      if (CONTROL.test(value)) return helpers.error('text.control');
      if (opts.noSpaces && WHITESPACE.test(value)) return helpers.error('text.spaces');
      if (codePoints(value) > max) return helpers.error('string.max', { limit: max });
      return value;
    })
    .messages({
      'text.unpaired': '{{#label}} is not valid Unicode',
      'text.control': '{{#label}} contains control characters',
      'text.spaces': '{{#label}} contains white space',
    });
}

export const fields = {
  openid: text(64, { noSpaces: true }),
  nick_name: text(64),
  avatar: Joi.string()
    .max(512)
    .uri({ scheme: ['http', 'https'] }),
  gender: Joi.number().integer().valid(0, 1),
  phone: text(32),
  user_id: Joi.number().integer().min(1).max(0xffffffff),
  js_code: text(128, { noSpaces: true }),
};

export interface OpenidInput {
  openid: string;
}
export interface LoginInput extends Profile {
  openid: string;
}
export interface UpdateInput {
  user_id: number;
  update: unknown;
}
export interface JsCodeInput {
  js_code: string;
}

export const openidInput = Joi.object<OpenidInput>({ openid: fields.openid.required() });

export const loginInput = Joi.object<LoginInput>({
  openid: fields.openid.required(),
  nick_name: fields.nick_name.required(),
  avatar: fields.avatar.required(),
  gender: fields.gender.required(),
  phone: fields.phone.required(),
});

export const jsCodeInput = Joi.object<JsCodeInput>({ js_code: fields.js_code.required() });

export const updateInput = Joi.object<UpdateInput>({
  user_id: fields.user_id.required(),
  // Documented as an object or a string holding JSON; any other present value is accepted
  // here so that parsePatch can answer it with -3 or -4, as the document's table says.
  update: Joi.alternatives(Joi.object(), Joi.string().allow(''), Joi.any()).invalid(null).required(),
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
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ServiceError('badUpdate', 'update must be a JSON object');
  }
  const { error, value: patch } = patchSchema.validate(value, { abortEarly: true, convert: true });
  if (error) throw new ServiceError('badUpdate', error.message);
  return patch;
}
