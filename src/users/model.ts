/** The user object of the API document, plus user_id (the row id update needs). */
export interface User {
  user_id: number;
  openid: string;
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
  nick_name: string;
  avatar: string;
  gender: number;
  phone: string;
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

/** `YYYY-MM-DD HH:mm:ss` in one IANA time zone; the Intl formatter is built once per zone. */
export function dateFormatter(timeZone: string): DateFormatter {
  const fmt = new Intl.DateTimeFormat('en-CA', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23',
  });
  return (date) => {
    const p: Record<string, string> = {};
    for (const part of fmt.formatToParts(date)) p[part.type] = part.value;
    return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
  };
}

export function toUser(row: UserRow, formatDate: DateFormatter): User {
  return {
    user_id: row.id,
    openid: row.openid,
    nick_name: row.nick_name,
    avatar: row.avatar,
    gender: row.gender,
    phone: row.phone,
    ctime: formatDate(row.ctime),
    mtime: formatDate(row.mtime),
  };
}

/** The JSON object text `json` with more fields appended, without parsing it again. */
export function extendJson(json: string, fields: Record<string, unknown>): string {
  return `${json.slice(0, -1)},${JSON.stringify(fields).slice(1)}`;
}
