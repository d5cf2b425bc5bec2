import { HttpMethodEnum, koaBody } from 'koa-body';
import type { Middleware } from 'koa';

/**
 * qs's own decoder keeps a malformed escape (`%FF`, `%E4%B8`, a bare `%`) as literal text, so
 * bytes that are not UTF-8 would pass as the string "%FF". A form that is not valid UTF-8
 * percent-encoding is refused instead (HTTP 400 from the parser, code -1 from the envelope).
 */
function strictFormDecoder(str: string): string {
  const value = str.replace(/\+/g, ' ');
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    throw Object.assign(new Error('form field is not valid UTF-8 percent-encoding'), { status: 400 });
  }
}

/**
 * JSON and urlencoded forms (the document's update example is a form), nothing else: no
 * multipart, no files. One size limit for both; a larger body is refused with 413.
 */
export function bodyParser(limit: string): Middleware {
  return koaBody({
    json: true,
    urlencoded: true,
    text: false,
    multipart: false,
    jsonLimit: limit,
    formLimit: limit,
    jsonStrict: true,
    parsedMethods: [HttpMethodEnum.POST],
    queryString: { depth: 2, parameterLimit: 100, arrayLimit: 20, decoder: strictFormDecoder },
  });
}
