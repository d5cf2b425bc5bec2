import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type WechatReply = { status?: number; body?: unknown; raw?: string; delayMs?: number; hang?: boolean };

/**
 * Stands in for api.weixin.qq.com: answers /sns/jscode2session from a table keyed by js_code,
 * with content-type text/plain as the real one does, and records every request it got.
 */
export class FakeWechat {
  readonly requests: URL[] = [];
  private readonly replies = new Map<string, WechatReply[]>();
  private server?: Server;
  url = '';

  /** Queue replies for a js_code; the last one repeats. */
  on(jsCode: string, ...replies: WechatReply[]): this {
    this.replies.set(jsCode, replies);
    return this;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    this.requests.push(url);
    if (url.pathname !== '/sns/jscode2session') {
      res.writeHead(404).end();
      return;
    }
    const jsCode = url.searchParams.get('js_code') ?? '';
    const queue = this.replies.get(jsCode);
    const reply: WechatReply = (queue && queue.length > 1 ? queue.shift() : queue?.[0]) ?? {
      body: { errcode: 40029, errmsg: 'invalid code' },
    };
    if (reply.hang) return; // never answers: the client's timeout must fire
    const send = () => {
      res.writeHead(reply.status ?? 200, { 'content-type': 'text/plain' });
      res.end(reply.raw ?? JSON.stringify(reply.body));
    };
    if (reply.delayMs) setTimeout(send, reply.delayMs);
    else send();
  }
}
