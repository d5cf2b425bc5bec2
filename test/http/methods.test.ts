import { expect } from 'chai';
import { METHODS, request } from 'node:http';
import { checkAnswer, contractAt, type OpenApiDocument } from '../helpers/contract';
import { LogCapture, startService, type TestService } from '../helpers/service';

interface Raw {
  status: number;
  headers: Record<string, string | undefined>;
  body: string;
}

/** Any method, as written (fetch refuses TRACE and friends), with a JSON body for those that may carry one. */
function send(base: string, method: string, path: string, body = '{'): Promise<Raw> {
  const url = new URL(base);
  const payload = method === 'GET' || method === 'HEAD' ? '' : body;
  // A length, always: Node's client sends a DELETE's or TRACE's body unframed otherwise.
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const headers = Object.fromEntries(
          Object.entries(res.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v]),
        );
        const answer = { status: res.statusCode!, headers, body: Buffer.concat(chunks).toString('utf8') };
        try {
          // Held to the document like every answer of the suite (helpers/contract.ts).
          checkAnswer(`${base}${path}`, { method, ...answer });
        } catch (err) {
          return reject(err);
        }
        resolve(answer);
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** A concrete path for a document path: its parameters from their examples. */
function concrete(doc: OpenApiDocument, template: string): string {
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const item = doc.paths[template]!;
    const params = (item.get as { parameters?: { name: string; example?: string; schema?: { example?: string } }[] })
      ?.parameters;
    const param = params?.find((p) => p.name === name);
    return String(param?.example ?? param?.schema?.example);
  });
}

// CONNECT takes an authority, not a path: Node's server hands it to 'connect' listeners, not the app.
const ALL_METHODS = METHODS.filter((m) => m !== 'CONNECT');

describe('every method on every path: an envelope with 404 or 405, never a 5xx', function () {
  this.timeout(60_000);
  let svc: TestService;
  let doc: OpenApiDocument;
  const logs = new LogCapture();

  before(async () => {
    svc = await startService({ LOG_LEVEL: 'info' }, logs);
    doc = contractAt(svc.url)!.doc;
  });
  after(() => svc.stop());

  it('answers TRACE, QUERY and PROPFIND on a route 405 with Allow: POST and the envelope', async () => {
    for (const method of ['TRACE', 'QUERY', 'PROPFIND']) {
      const res = await send(svc.url, method, '/service/user/get');
      expect(res.status, method).to.equal(405);
      expect(res.headers.allow, method).to.equal('POST');
      expect(JSON.parse(res.body), method).to.deep.include({ code: 405, data: null });
    }
  });

  it('answers PUT /healthz and DELETE /media/avatar/<name> 405 with Allow: GET, HEAD, without reading the body', async () => {
    for (const [method, path] of [
      ['PUT', '/healthz'],
      ['DELETE', '/media/avatar/1_20200401184953.jpg'],
      ['POST', '/healthz'], // a malformed JSON body, never read: 405, not -1
    ] as const) {
      const res = await send(svc.url, method, path);
      expect(res.status, `${method} ${path}`).to.equal(405);
      expect(res.headers.allow, `${method} ${path}`).to.equal('GET, HEAD');
      expect(JSON.parse(res.body)).to.deep.include({ code: 405, data: null });
    }
    const missing = await send(svc.url, 'PUT', '/nope');
    expect(missing.status).to.equal(404);
    expect(JSON.parse(missing.body)).to.deep.include({ code: 404 });
    // The media path that cannot name a file is no path at all.
    expect((await send(svc.url, 'DELETE', '/media/avatar/..%2Fx.jpg')).status).to.equal(404);
  });

  it(`answers each of Node's ${ALL_METHODS.length} methods on every path of both listeners as the document says`, async () => {
    const before = logs.lines.length;
    let sent = 0;
    for (const [template, item] of Object.entries(doc.paths)) {
      const path = concrete(doc, template);
      const takes = Object.keys(item)
        .filter((k) => ['get', 'post', 'put', 'delete', 'patch'].includes(k))
        .map((m) => m.toUpperCase());
      if (takes.includes('GET')) takes.push('HEAD');
      const listeners = item.servers ? [svc.opsUrl] : [svc.url, svc.opsUrl];
      for (const base of listeners) {
        for (const method of ALL_METHODS.filter((m) => !takes.includes(m))) {
          const res = await send(base, method, path);
          sent++;
          expect(res.status, `${method} ${base}${path}`).to.equal(405);
          expect(res.headers.allow?.split(', ').sort(), `${method} ${path}`).to.deep.equal([...takes].sort());
        }
      }
      // An ops path on the API port is no path there.
      if (item.servers) expect((await send(svc.url, 'TRACE', path)).status, path).to.equal(404);
    }
    for (const base of [svc.url, svc.opsUrl]) {
      for (const method of ALL_METHODS) {
        const res = await send(base, method, '/no/such/path');
        expect(res.status, `${method} ${base}`).to.equal(404);
      }
    }
    expect(sent).to.be.greaterThan(300);
    // A client's choice of method is never the service's fault: nothing above info.
    const lines = logs.lines.slice(before).map((l) => JSON.parse(l) as { level: number; status?: number });
    expect(lines.filter((l) => l.level >= 40)).to.deep.equal([]);
    expect(lines.filter((l) => (l.status ?? 0) >= 500)).to.deep.equal([]);
  });
});
