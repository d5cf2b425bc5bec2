import type { Middleware } from 'koa';
import type { RouteState } from '../http/route';
import { contentTypeOf } from './image';
import type { MediaStore } from './store';

/**
 * The only media URLs there are: /media/avatar/<user_id>_<YYYYMMDDHHmmss>_<hex>.<ext> (and the
 * names without `_<hex>` that uploads were given before it was added). The raw path
 * is matched before any decoding, so an escape (%2e%2e, %2f), a backslash or a NUL can never
 * form a name: anything else under /media is 404.
 */
const AVATAR_PATH = /^\/media\/(avatar\/[0-9]{1,16}_[0-9]{14}(?:_[0-9a-f]{12})?\.(jpg|png|webp))$/;

const notFound = { code: 404, msg: 'not found', data: null };

/** The media paths that exist, and their methods: any other method there is 405 (app.ts). */
export const mediaPaths = (path: string): readonly string[] | null => (AVATAR_PATH.test(path) ? ['GET', 'HEAD'] : null);

/** GET/HEAD /media/...: stored media, immutable (a new upload always gets a new name). */
export function serveMedia(store: MediaStore): Middleware {
  const serve: Middleware = async (ctx, next) => {
    const raw = ctx.url.split('?', 1)[0]!;
    if (!raw.startsWith('/media/') && raw !== '/media') return next();
    (ctx.state as RouteState).ops = 'media';
    ctx.set('X-Content-Type-Options', 'nosniff');
    const match = AVATAR_PATH.exec(raw);
    const found = match ? await store.open(match[1]!) : null;
    if (!found) {
      ctx.status = 404;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = notFound;
      return;
    }
    ctx.type = contentTypeOf(match![2]!)!;
    ctx.length = found.size;
    ctx.set('Cache-Control', 'public, max-age=31536000, immutable');
    // An image, never a document: nothing in it may run, even if a browser opens it.
    ctx.set('Content-Security-Policy', "default-src 'none'; sandbox");
    if (ctx.method === 'HEAD') {
      found.body.destroy();
      ctx.status = 200;
      return;
    }
    ctx.body = found.body;
  };
  // Every API call passes here: one prefix test is all it pays, and no async frame of its own.
  return (ctx, next) => {
    const { url, method } = ctx.req;
    return url?.startsWith('/media') && (method === 'GET' || method === 'HEAD') ? serve(ctx, next) : next();
  };
}
