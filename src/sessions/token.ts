import { randomFillSync } from 'node:crypto';
import keySlot from 'cluster-key-slot';

/**
 * A token is 32 base64url characters: 29 random ones (174 bits, well past the 128 a bearer
 * token needs) and 3 chosen so that the token's Redis Cluster slot is a given one. A session
 * key is `session:{<token>}`, so its slot is the token's: a token minted into the slot of its
 * user's keys lets one script store the session, index it and read the cached profile, on a
 * single node and in a cluster alike. Readers need not know: the key is still the token's.
 */
const RANDOM_CHARS = 29;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const SLOTS = 16384;

// 22 bytes encode to 30 base64url characters whose first 29 carry 174 random bits.
const DRAW_BYTES = 22;
// randomBytes() per token was 6 % of the cached loginByOpenid path (bench profile): each call
// crosses into OpenSSL. Filling 8 KiB at a time and handing out fresh slices costs the same
// CSPRNG output per token; no byte is ever handed out twice.
const POOL_BYTES = DRAW_BYTES * 372;
const pool = Buffer.allocUnsafeSlow(POOL_BYTES);
let offset = POOL_BYTES;

function randomChars(): string {
  if (offset + DRAW_BYTES > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  const chars = pool.toString('base64url', offset, offset + DRAW_BYTES).slice(0, RANDOM_CHARS);
  offset += DRAW_BYTES;
  return chars;
}

/**
 * CRC16 (Redis's slot hash) is linear: crc(head + tail) = crc(head + "\0\0\0") ^ crc(tail) for
 * a 3-byte tail. So a 3-character tail with the right crc moves any head into any slot; this
 * table holds one such tail per value of crc(tail) & 0x3fff. Built on first use (262,144
 * CRCs, about 30 ms), then a token costs two short CRCs more than a plain random one.
 */
let tails: string[] | undefined;
/** Builds the table now (an issuer calls this at startup, so no request waits for it). */
export function tailTable(): string[] {
  if (tails) return tails;
  const table = new Array<string>(SLOTS);
  const bytes = Buffer.alloc(3);
  let filled = 0;
  for (const a of ALPHABET) {
    for (const b of ALPHABET) {
      for (const c of ALPHABET) {
        bytes[0] = a.charCodeAt(0);
        bytes[1] = b.charCodeAt(0);
        bytes[2] = c.charCodeAt(0);
        const slot = keySlot(bytes);
        if (table[slot] === undefined) {
          table[slot] = a + b + c;
          filled++;
        }
      }
    }
  }
  // Holds for CRC16-XMODEM over this alphabet; checked rather than assumed.
  if (filled !== SLOTS) throw new Error(`token tails cover ${filled} of ${SLOTS} slots`);
  tails = table;
  return table;
}

const headBytes = Buffer.alloc(RANDOM_CHARS + 3);

/** A fresh token whose Redis Cluster slot (that of `session:{<token>}`) is `slot`. */
export function newToken(slot: number): string {
  const table = tailTable();
  const head = randomChars();
  headBytes.write(head, 0, 'latin1');
  // headBytes ends in three zero bytes, never written.
  const headSlot = keySlot(headBytes);
  return head + table[(slot ^ headSlot) & (SLOTS - 1)]!;
}

// keySlot(string) first copies the key into an array of numbers; bytes cost nothing extra.
let keyBytes = Buffer.alloc(256);

/** The Redis Cluster slot of a key (hash tags honoured), as ioredis and Redis compute it. */
export function slotOf(key: string): number {
  if (key.length * 3 > keyBytes.length) keyBytes = Buffer.alloc(key.length * 3);
  const n = keyBytes.write(key, 0, 'utf8');
  return keySlot(keyBytes.subarray(0, n));
}

// The token's shape is part of the contract readers check: the package holds it.
export { bearerToken, isTokenShaped } from 'wechat-user-sessions';
