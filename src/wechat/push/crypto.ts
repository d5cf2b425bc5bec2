import { createDecipheriv, createHash, timingSafeEqual } from 'node:crypto';

/**
 * WeChat's message push signatures and secure mode (the "安全模式" of 消息推送), with node:crypto.
 * signature = SHA-1 of the sorted concatenation of the token, timestamp and nonce (and, for
 * msg_signature, the Encrypt field). The cipher is AES-256-CBC, key base64(EncodingAESKey + '='),
 * IV its first 16 bytes, PKCS#7 padding to 32-byte blocks (not AES's 16: Node's own unpadding
 * would refuse a pad of 17-32, so it is turned off and the padding checked here).
 */

/** The SHA-1 WeChat signs a push with: the parts sorted as strings, then joined. */
export function pushSignature(parts: readonly string[]): string {
  return createHash('sha1')
    .update([...parts].sort().join(''))
    .digest('hex');
}

/** Compares a signature from the query with the expected one, in constant time. */
export function signatureMatches(given: unknown, parts: readonly string[]): boolean {
  if (typeof given !== 'string' || given.length !== 40) return false;
  const expected = Buffer.from(pushSignature(parts), 'latin1');
  return timingSafeEqual(Buffer.from(given.toLowerCase(), 'latin1'), expected);
}

/** The AES key of an EncodingAESKey (43 base64 characters, checked by the configuration). */
export function aesKeyOf(encodingAesKey: string): Buffer {
  const key = Buffer.from(`${encodingAesKey}=`, 'base64');
  if (key.length !== 32) throw new Error('an EncodingAESKey must decode to 32 bytes');
  return key;
}

const BLOCK = 32;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export type DecryptFailure = 'undecryptable' | 'wrong appid';

/**
 * The message inside an Encrypt field: 16 random bytes, the message's length (4 bytes, big
 * endian), the message, then the appid, which must be `appid`. Each key is tried in turn (the
 * current EncodingAESKey, then the previous one). Answers the message, or why it failed.
 */
export function decryptPush(encrypt: string, keys: readonly Buffer[], appid: string): string | DecryptFailure {
  if (!BASE64.test(encrypt)) return 'undecryptable';
  const data = Buffer.from(encrypt, 'base64');
  if (data.length === 0 || data.length % BLOCK !== 0) return 'undecryptable';
  let failure: DecryptFailure = 'undecryptable';
  for (const key of keys) {
    const plain = decipher(data, key);
    if (!plain) continue;
    const length = plain.length >= 20 ? plain.readUInt32BE(16) : -1;
    if (length < 0 || 20 + length > plain.length) continue;
    if (plain.subarray(20 + length).toString('latin1') !== appid) {
      failure = 'wrong appid';
      continue;
    }
    return plain.subarray(20, 20 + length).toString('utf8');
  }
  return failure;
}

/** AES-256-CBC without Node's padding, then WeChat's PKCS#7 (1-32) checked and stripped; null if invalid. */
function decipher(data: Buffer, key: Buffer): Buffer | null {
  const d = createDecipheriv('aes-256-cbc', key, key.subarray(0, 16));
  d.setAutoPadding(false);
  const plain = Buffer.concat([d.update(data), d.final()]);
  const pad = plain[plain.length - 1]!;
  if (pad < 1 || pad > BLOCK || pad > plain.length) return null;
  for (let i = plain.length - pad; i < plain.length; i++) if (plain[i] !== pad) return null;
  return plain.subarray(0, plain.length - pad);
}
