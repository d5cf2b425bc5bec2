import { HttpMethodEnum, koaBody } from 'koa-body';
import type { Middleware } from 'koa';

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
    queryString: { depth: 2, parameterLimit: 100, arrayLimit: 20 },
  });
}
