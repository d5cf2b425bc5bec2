import { SEALED_PREFIX, type PhoneCipher } from './phone-cipher';

/** The user object of the API document, plus user_id (the row id update needs). */
export interface User {
  user_id: number;
  openid: string;
  /** WeChat's unionid, null until WeChat or the gateway has told it. */
  unionid: string | null;
  nick_name: string;
  avatar: string;
  gender: number;
  phone: string;
  ctime: string;
  mtime: string;
}

export interface UserRow {
  id: number;
  openid: string;
  unionid: string | null;
  nick_name: string;
  avatar: string;
  gender: number;
  /** In the clear (the repository opens it). */
  phone: string;
  /** As stored: ciphertext, '' or (before `npm run rekey`) plain text. What the cache holds. */
  sealedPhone: string;
  version: number;
  ctime: Date;
  mtime: Date;
}

/** The fields login takes and update may change. */
export interface Profile {
  nick_name: string;
  avatar: string;
  gender: number;
  phone: string;
}

export const PROFILE_FIELDS: readonly (keyof Profile)[] = ['nick_name', 'avatar', 'gender', 'phone'];

export type DateFormatter = (date: Date) => string;

const QUARTER_HOUR_MS = 15 * 60 * 1000;
const HOUR_MS = 60 * 60 * 1000;
const pad = (n: number) => (n < 10 ? `0${n}` : String(n));

/**
 * Zones whose UTC offset has not changed since `since` (IANA tzdata): China's (no DST since
 * September 1991), Hong Kong's, Macau's and Taiwan's (since 1979), and UTC. Their dates from
 * `since` on are formatted by arithmetic alone. The reason is memory, not speed: a process's
 * first Intl.DateTimeFormat, whatever its locale and zone, pages in ~5 MB of the ICU data
 * embedded in the node binary (0.7 -> 5.6 MB of those pages resident), and file pages count in
 * the process's RSS, its bound under attack included. Any other zone, or an earlier date, asks
 * Intl; test/users/model.test.ts holds both ways to Intl's answers. Should one of these zones
 * change its rules, this table changes with it (as Node's ICU would in a Node release).
 */
const STEADY_ZONES: ReadonlyMap<string, { offsetMs: number; since: number }> = new Map([
  ...['Asia/Shanghai', 'PRC', 'Asia/Chongqing', 'Asia/Chungking', 'Asia/Harbin'].map(
    (zone) => [zone, { offsetMs: 8 * HOUR_MS, since: Date.UTC(1992, 0, 1) }] as const,
  ),
  ...['Asia/Hong_Kong', 'Hongkong', 'Asia/Macau', 'Asia/Macao', 'Asia/Taipei', 'ROC'].map(
    (zone) => [zone, { offsetMs: 8 * HOUR_MS, since: Date.UTC(1980, 0, 1) }] as const,
  ),
  ...['UTC', 'Etc/UTC'].map((zone) => [zone, { offsetMs: 0, since: -Infinity }] as const),
]);

/** Whether TIME_ZONE names a zone of STEADY_ZONES: known to exist without asking Intl. */
export function isSteadyZone(timeZone: string): boolean {
  return STEADY_ZONES.has(timeZone);
}

/**
 * The zone's UTC offset at an instant, from Intl. Its formatToParts costs ~15 µs a call, paid
 * twice per user read from MySQL; a zone's UTC offset only changes on quarter-hour boundaries
 * (in modern tz data), so it is looked up once per quarter hour.
 */
function intlOffsets(timeZone: string): (ms: number) => number {
  const fmt = new Intl.DateTimeFormat('en-US', {
    timeZone,
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
    hourCycle: 'h23',
  });
  const offsets = new Map<number, number>();
  return (ms) => {
    const bucket = Math.floor(ms / QUARTER_HOUR_MS);
    let offset = offsets.get(bucket);
    if (offset === undefined) {
      const at = bucket * QUARTER_HOUR_MS;
      const p: Record<string, number> = {};
      for (const part of fmt.formatToParts(at)) p[part.type] = Number(part.value);
      offset = Date.UTC(p.year!, p.month! - 1, p.day, p.hour, p.minute, p.second) - at;
      if (offsets.size >= 4096) offsets.clear();
      offsets.set(bucket, offset);
    }
    return offset;
  };
}

/** `YYYY-MM-DD HH:mm:ss` in one IANA time zone. */
export function dateFormatter(timeZone: string): DateFormatter {
  const steady = STEADY_ZONES.get(timeZone);
  // Built on first need: a steady zone's service never loads ICU's data.
  let intl: ((ms: number) => number) | undefined;
  const offsetAt = (ms: number): number =>
    steady && ms >= steady.since ? steady.offsetMs : (intl ??= intlOffsets(timeZone))(ms);
  return (date) => {
    const ms = date.getTime();
    const d = new Date(ms + offsetAt(ms));
    return (
      `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`
    );
  };
}

export function toUser(row: UserRow, formatDate: DateFormatter): User {
  return {
    user_id: row.id,
    openid: row.openid,
    unionid: row.unionid ?? null,
    nick_name: row.nick_name,
    avatar: row.avatar,
    gender: row.gender,
    phone: row.phone,
    ctime: formatDate(row.ctime),
    mtime: formatDate(row.mtime),
  };
}

const PHONE_FIELD = '"phone":"';

/**
 * The user's JSON as cached (phone as stored, ciphertext: never the number in Redis) and as
 * answered (phone in the clear), stringified once: the answer is the cached text with the
 * phone spliced in.
 */
export function userJson(row: UserRow, formatDate: DateFormatter): { cached: string; answer: string } {
  const cached = JSON.stringify(toUser({ ...row, phone: row.sealedPhone }, formatDate));
  if (row.sealedPhone === row.phone) return { cached, answer: cached };
  return { cached, answer: withPhone(cached, () => row.phone) };
}

/**
 * A cached user's JSON with its phone opened for `openid`, and `fields` appended when given,
 * without parsing it: one splice, so the text is copied once (when it is written), not once to
 * open the phone and again to append. A sealed value is base64url and dots (nothing JSON
 * escapes), so it ends at the next quote; the key can only be the top-level field (inside a
 * JSON string every quote is escaped). '' and a plain-text phone cached before encryption are
 * answered as they are. Throws UnreadablePhoneError.
 */
export function openUserJson(
  json: string,
  openid: string,
  cipher: PhoneCipher,
  fields?: Record<string, unknown>,
): string {
  return withPhone(json, (sealed) => cipher.open(sealed, openid), fields);
}

/** `json` with its sealed phone replaced by `phone(sealed)` (when sealed) and `fields` appended. */
function withPhone(json: string, phone: (sealed: string) => string, fields?: Record<string, unknown>): string {
  // From the end: only ctime and mtime follow the phone, while the nickname and avatar before it
  // are the user's and long (0.16 against 0.22 µs for a bench user's UTF-16 JSON).
  const at = json.lastIndexOf(PHONE_FIELD);
  const start = at + PHONE_FIELD.length;
  if (at < 0 || !json.startsWith(SEALED_PREFIX, start)) return fields ? extendJson(json, fields) : json;
  const end = json.indexOf('"', start);
  const head = json.slice(0, start - 1) + JSON.stringify(phone(json.slice(start, end)));
  // The fields go onto the rest alone: extending the spliced whole would copy it first.
  const rest = json.slice(end + 1);
  return head + (fields ? extendJson(rest, fields) : rest);
}

/** The JSON object text `json` with more fields appended, without parsing it again. */
export function extendJson(json: string, fields: Record<string, unknown>): string {
  return `${json.slice(0, -1)},${JSON.stringify(fields).slice(1)}`;
}
