import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';

/**
 * users.phone at rest: AES-256-GCM, a random 96-bit IV per write, the row's openid as the
 * additional authenticated data, stored as `v1.<key id>.<iv>.<ciphertext + tag>` (base64url).
 * The value names its key, so keys can rotate: the first of PHONE_KEYS seals, every one of
 * them opens (docs/phone-encryption.md).
 *
 * '' is stored as '': it holds no number, and its ciphertext would tell the same thing through
 * its length. A value that is not sealed is a plain-text phone written before encryption (the
 * column held at most 32 characters then, and a sealed value is at least 45): read as it is
 * until `npm run rekey` has sealed it, never written again by the service.
 */

const VERSION = 'v1';
export const SEALED_PREFIX = `${VERSION}.`;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const KEY_ID = /^[A-Za-z0-9_-]{1,16}$/;
const SEALED = /^v1\.([A-Za-z0-9_-]{1,16})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{23,})$/;
// Binds the value to its column as well as its row: a key ever used for another field cannot
// have that field's values pass for phones.
const AAD_CONTEXT = 'users.phone\0';

export interface PhoneKey {
  id: string;
  key: KeyObject;
}

/**
 * The fixed key used outside production when PHONE_KEYS is not set. It is public (it is in
 * this file), so it protects nothing: production refuses to start with it.
 */
export const DEVELOPMENT_KEY_TEXT = 'dev:ZGV2ZWxvcG1lbnQga2V5LCBub3QgYSBzZWNyZXQhISE=';

/** Why a stored phone cannot be read. The message names the key and the reason, never the value. */
export class UnreadablePhoneError extends Error {
  override name = 'UnreadablePhoneError';
  /** users.id of the row, once the repository knows it. */
  userId: number | null = null;
  constructor(
    readonly reason: 'malformed' | 'unknown key' | 'not this row',
    readonly keyId: string | null,
  ) {
    super(
      reason === 'not this row'
        ? `the stored phone does not decrypt for its row with key ${keyId} (copied from another row, or altered)`
        : reason === 'unknown key'
          ? `the stored phone names key ${keyId}, which is not in PHONE_KEYS`
          : 'the stored phone is not a value this service wrote',
    );
  }
}

/**
 * PHONE_KEYS: `<id>:<base64 of 32 bytes>`, comma-separated. Throws a message naming the bad
 * entry by its position and id, never its key material.
 */
export function parsePhoneKeys(text: string): PhoneKey[] {
  const keys: PhoneKey[] = [];
  const entries = text.split(',').map((s) => s.trim());
  entries.forEach((entry, i) => {
    const at = `key ${i + 1}`;
    const colon = entry.indexOf(':');
    const id = colon < 0 ? '' : entry.slice(0, colon);
    if (!KEY_ID.test(id)) throw new Error(`${at} must be <id>:<base64 of 32 bytes>, its id 1-16 of A-Za-z0-9_-`);
    const material = entry.slice(colon + 1);
    const bytes = Buffer.from(material, 'base64');
    // Buffer.from skips what is not base64; re-encoding tells a typo from a key.
    const canonical = bytes.toString('base64');
    if (bytes.length !== KEY_BYTES || material.replace(/=+$/, '') !== canonical.replace(/=+$/, '')) {
      throw new Error(`${at} ("${id}") must be the base64 of exactly ${KEY_BYTES} bytes`);
    }
    if (keys.some((k) => k.id === id)) throw new Error(`${at}: the id "${id}" is used twice`);
    keys.push({ id, key: createSecretKey(bytes) });
  });
  return keys;
}

/** Whether a key is the published development key (refused in production). */
export function isDevelopmentKey(key: PhoneKey): boolean {
  const [dev] = parsePhoneKeys(DEVELOPMENT_KEY_TEXT);
  return key.key.equals(dev!.key);
}

const GCM_OPTIONS = { authTagLength: TAG_BYTES } as const;
// The AAD is written into one buffer rather than built per call: setAAD() hands it to OpenSSL
// at once, so the next call may overwrite it. With the decoder's output taken as a Buffer (no
// StringDecoder), an opening costs ~14 % less (5.2 -> 4.5 µs, alternating blocks in one process).
const AAD_HEAD = Buffer.byteLength(AAD_CONTEXT);
const aadScratch = Buffer.alloc(AAD_HEAD + 1024);
aadScratch.write(AAD_CONTEXT, 0, 'latin1');

/** Trailing spaces dropped, as MySQL's PAD SPACE collation of users.openid compares. */
function aadOf(openid: string): Buffer {
  const id = openid.endsWith(' ') ? openid.replace(/ +$/, '') : openid;
  if (id.length * 3 > aadScratch.length - AAD_HEAD) return Buffer.from(AAD_CONTEXT + id, 'utf8');
  return aadScratch.subarray(0, AAD_HEAD + aadScratch.write(id, AAD_HEAD, 'utf8'));
}

export class PhoneCipher {
  private readonly byId: Map<string, KeyObject>;
  private readonly current: PhoneKey;
  /**
   * Phones opened lately, by stored value with its openid (PHONE_MEMO_SIZE). Opening costs ~4.5 µs
   * of CPU in a loop and 12-20 µs in a serving process; the same user's profile is read again
   * and again while it is active (every launch, every `session` check of a sibling service). An
   * entry is made only by a successful open of that very value for that very openid, and a value
   * never changes what it opens to, so a hit answers what opening would: a value copied to
   * another row does not match its entry, and is opened (and refused) afresh.
   *
   * A hit is paid in memory latency, not instructions: under load the young generation streams
   * through the CPU's caches between two launches of a user, and each object a lookup visits is
   * a miss. Keyed by the value, with the entry an object holding openid and phone, a hit cost
   * ~2.5 µs (2.6 µs of self time a cached launch in the service's profile) against ~0.5 µs with
   * warm caches. So the key is a number hashed from the IV (nothing to read but the value in
   * hand) and the entry one flat string holding the value, the openid and the phone (`entry()`),
   * compared in full: ~1.6 µs under the same pressure.
   *
   * Evicted oldest first, through a ring of the keys in the order they were remembered: a
   * Map's own front (insertion order) is found by walking the slots its deletions left, which
   * cost +5 µs a miss (10.4 against 5.5 µs, 60,000 distinct values, memo 10,000). Two
   * generations (a hit moved to the newer, the older dropped whole) were tried: with a working
   * set past half the memo they flipped every second or so, and the full collections of what
   * they dropped took the cached launch from 0.0 to 0.6-0.8 a second in the bench.
   */
  private readonly recent = new Map<number, string>();
  private readonly order: number[] = [];
  private next = 0;

  /** `keys[0]` seals; all of them open. `memoSize`: how many opened phones to remember (0: none). */
  constructor(
    keys: readonly PhoneKey[],
    private readonly memoSize = 0,
  ) {
    if (keys.length === 0) throw new Error('PhoneCipher needs at least one key');
    this.current = keys[0]!;
    this.byId = new Map(keys.map((k) => [k.id, k.key]));
  }

  /** How many opened phones are remembered now (at most PHONE_MEMO_SIZE). */
  get remembered(): number {
    return this.recent.size;
  }

  /** The id of the key that seals. */
  get currentKeyId(): string {
    return this.current.id;
  }

  /** The value to store for `phone` in the row of `openid`. */
  seal(phone: string, openid: string): string {
    if (phone === '') return '';
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.current.key, iv, GCM_OPTIONS);
    cipher.setAAD(aadOf(openid));
    const body = Buffer.concat([cipher.update(phone, 'utf8'), cipher.final(), cipher.getAuthTag()]);
    return `${SEALED_PREFIX}${this.current.id}.${iv.toString('base64url')}.${body.toString('base64url')}`;
  }

  /**
   * The phone of a stored value, read in the row of `openid`. Throws UnreadablePhoneError for a
   * value sealed for another row, altered, or under a key not in PHONE_KEYS. `remember` false:
   * not kept in the memo (a row read from MySQL: the user's next reads come from the cache, and
   * a stream of misses would only churn the memo out of what the cache is answering).
   */
  open(stored: string, openid: string, remember = true): string {
    if (!isSealed(stored)) return stored;
    if (this.memoSize === 0) return this.decrypt(stored, openid);
    const key = ivHash(stored);
    const known = this.recent.get(key);
    if (known !== undefined) {
      const phone = recalled(known, stored, openid);
      if (phone !== null) return phone;
    }
    const phone = this.decrypt(stored, openid);
    // A key taken by another value (another openid's, or an IV hashing alike) keeps its entry.
    if (remember && known === undefined) this.remember(key, stored, openid, phone);
    return phone;
  }

  private remember(key: number, stored: string, openid: string, phone: string): void {
    const made = entry(stored, openid, phone);
    if (made === null) return;
    if (this.order.length < this.memoSize) this.order.push(key);
    else {
      this.recent.delete(this.order[this.next]!);
      this.order[this.next] = key;
      this.next = (this.next + 1) % this.memoSize;
    }
    this.recent.set(key, made);
  }

  private decrypt(stored: string, openid: string): string {
    const [, id, iv, body] = SEALED.exec(stored) ?? [];
    if (!body) throw new UnreadablePhoneError('malformed', null);
    const key = this.byId.get(id!);
    if (!key) throw new UnreadablePhoneError('unknown key', id!);
    const bytes = Buffer.from(body, 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv!, 'base64url'), GCM_OPTIONS);
    decipher.setAAD(aadOf(openid));
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
    let plain: Buffer;
    try {
      plain = decipher.update(bytes.subarray(0, bytes.length - TAG_BYTES));
      // Throws unless the tag matches: nothing is answered before it has.
      decipher.final();
    } catch {
      throw new UnreadablePhoneError('not this row', id!);
    }
    return plain.toString('utf8');
  }

  /** Whether `npm run rekey` has work on this value: plain text, or sealed with another key. */
  needsRekey(stored: string): boolean {
    if (stored === '') return false;
    return !isSealed(stored) || !stored.startsWith(`${SEALED_PREFIX}${this.current.id}.`);
  }
}

/**
 * Whether a stored value is sealed (else it is '' or a plain-text phone from before). Plain
 * phones were at most 32 characters; a sealed value is at least 45 and starts with `v1.`.
 */
export function isSealed(stored: string): boolean {
  return stored.length > 32 && stored.startsWith(SEALED_PREFIX);
}

/** The memo's key of a sealed value: a hash of its IV's first 8 characters (48 random bits). */
function ivHash(stored: string): number {
  const at = stored.indexOf('.', SEALED_PREFIX.length) + 1;
  let h = 0;
  for (let i = at; i < at + 8; i++) h = (Math.imul(h, 31) + stored.charCodeAt(i)) | 0;
  // Within a small integer: the Map hashes it without reading memory.
  return h & 0x3fffffff;
}

// Lengths are stored as one character each; past this they could be surrogates, which the copy
// below would not keep. No openid or value comes near it (openids are at most 64 characters).
const ENTRY_LENGTH_MAX = 0xd7ff;

/**
 * A memo entry: the lengths of the value and the openid, then the value, the openid and the
 * phone, in one string. A copy: the value is a slice of the cached JSON it was read from, and a
 * slice (or a concatenation holding it) keeps its whole text alive (a bench user's JSON is UTF-16
 * for its emoji: 10,000 entries held 6.6 MB). Null when a length does not fit.
 */
function entry(stored: string, openid: string, phone: string): string | null {
  if (stored.length > ENTRY_LENGTH_MAX || openid.length > ENTRY_LENGTH_MAX) return null;
  const text = String.fromCharCode(stored.length, openid.length) + stored + openid + phone;
  return Buffer.from(text, 'utf8').toString('utf8');
}

/** The phone of an entry made for exactly this value and this openid, else null. */
function recalled(made: string, stored: string, openid: string): string | null {
  const openidAt = 2 + stored.length;
  if (made.charCodeAt(0) !== stored.length || made.charCodeAt(1) !== openid.length) return null;
  if (!made.startsWith(stored, 2) || !made.startsWith(openid, openidAt)) return null;
  return made.slice(openidAt + openid.length);
}
