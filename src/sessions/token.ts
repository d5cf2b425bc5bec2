import { randomFillSync } from 'node:crypto';

/** 192 random bits: well past the 128 a bearer token needs, 32 base64url characters. */
export const TOKEN_BYTES = 24;
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{32}$/;

// randomBytes(24) per token was 6 % of the cached loginByOpenid path (bench profile): each
// call crosses into OpenSSL for 24 bytes. Filling 8 KiB at a time and handing out fresh
// slices costs the same CSPRNG output per token; no byte is ever handed out twice.
const POOL_BYTES = TOKEN_BYTES * 341;
const pool = Buffer.allocUnsafeSlow(POOL_BYTES);
let offset = POOL_BYTES;

export function newToken(): string {
  if (offset + TOKEN_BYTES > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  const token = pool.toString('base64url', offset, offset + TOKEN_BYTES);
  offset += TOKEN_BYTES;
  return token;
}

/** Rejects anything that cannot be one of our tokens before it reaches Redis. */
export function isTokenShaped(value: unknown): value is string {
  return typeof value === 'string' && TOKEN_SHAPE.test(value);
}

/** The token of `Authorization: Bearer <token>`, if the header has that form. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}
