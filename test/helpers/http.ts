import { connect } from 'node:net';
import type { Profile } from '../../src/users/model';

export interface Answer<T = unknown> {
  status: number;
  body: { code: number; msg: string; data: T };
  headers: Headers;
  text: string;
}

/** POSTs a JSON body (or a form, or raw bytes) and returns the parsed envelope. */
export async function post<T = any>(
  baseUrl: string,
  route: string,
  body: unknown,
  opts: { form?: boolean; raw?: string | Buffer; contentType?: string; headers?: Record<string, string> } = {},
): Promise<Answer<T>> {
  const headers: Record<string, string> = { ...opts.headers };
  let payload: string | Buffer;
  if (opts.raw !== undefined) {
    payload = opts.raw;
    headers['content-type'] = opts.contentType ?? 'application/json';
  } else if (opts.form) {
    payload = new URLSearchParams(body as Record<string, string>).toString();
    headers['content-type'] = 'application/x-www-form-urlencoded';
  } else {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const path = route.startsWith('/') ? route : `/service/user/${route}`;
  const res = await fetch(`${baseUrl}${path}`, { method: 'POST', headers, body: payload });
  const text = await res.text();
  let parsed: Answer<T>['body'];
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`not JSON (HTTP ${res.status}): ${text.slice(0, 200)}`);
  }
  return { status: res.status, body: parsed, headers: res.headers, text };
}

/** A login answer's user fields, without the session fields (token, token_expires_at). */
export function userPart<T extends Record<string, unknown>>(data: T): Omit<T, 'token' | 'token_expires_at'> {
  const { token: _t, token_expires_at: _e, ...user } = data;
  return user;
}

/** A valid login body; a test overrides only the fields it asserts on. */
export function loginBody(openid: string, fields: Partial<Profile> = {}): Profile & { openid: string } {
  return { openid, nick_name: 'n', avatar: 'https://example.com/a.png', gender: 1, phone: '1', ...fields };
}

/** Whether a brand-new TCP connection to the service's port is accepted. */
export function accepts(url: string): Promise<boolean> {
  const { port, hostname } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
