import { createReadStream } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Router, RouterMiddleware } from '@koa/router';

/** swagger-ui-dist's files, served from node_modules: the page needs no CDN and no network. */
const DIST = dirname(require.resolve('swagger-ui-dist/package.json'));

/** The only files served under /docs/: a fixed list, so no path from a URL reaches the disk. */
const ASSETS: Record<string, { file: string; type: string }> = {
  'swagger-ui.css': { file: 'swagger-ui.css', type: 'text/css; charset=utf-8' },
  'swagger-ui-bundle.js': { file: 'swagger-ui-bundle.js', type: 'application/javascript; charset=utf-8' },
  'favicon-32x32.png': { file: 'favicon-32x32.png', type: 'image/png' },
};

/** Every file under /docs/, for the OpenAPI document. */
export const DOCS_ASSETS: readonly string[] = ['init.js', ...Object.keys(ASSETS)];

const PAGE = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>User service API</title>
    <link rel="stylesheet" href="/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js"></script>
    <script src="/docs/init.js"></script>
  </body>
</html>
`;

// validatorUrl null: Swagger UI would otherwise fetch a badge from validator.swagger.io.
const INIT = `window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
  displayOperationId: true,
  defaultModelsExpandDepth: 1,
});
`;

// Everything from this origin, nothing from anywhere else; Swagger UI sets inline styles.
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** GET /docs: Swagger UI over /openapi.json, with "try it out" against this service. */
export function mountDocs(router: Router, named: (name: string) => RouterMiddleware): void {
  router.get('/docs', named('docs'), (ctx) => {
    ctx.set('Content-Security-Policy', CSP);
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = PAGE;
  });
  router.get('/docs/init.js', named('docs'), (ctx) => {
    ctx.type = 'application/javascript; charset=utf-8';
    ctx.body = INIT;
  });
  router.get('/docs/:asset', named('docs'), (ctx, next) => {
    const asset = ASSETS[ctx.params.asset as string];
    if (!asset) return next();
    ctx.set('Cache-Control', 'public, max-age=3600');
    ctx.type = asset.type;
    ctx.body = createReadStream(join(DIST, asset.file));
  });
}
