import { XMLParser } from 'fast-xml-parser';

/**
 * A push message's fields as strings: WeChat sends the same fields as JSON or as XML (the
 * developer's choice of 数据格式), and numbers (CreateTime, RevokeInfo) as numbers in one and
 * text in the other. An object one level down is kept as `parent.child` (wxa_media_check's
 * `result.suggest`); deeper values and lists (its `detail`) are left out.
 */
export type PushMessage = Readonly<Record<string, string>>;

// Tag values stay text (RevokeInfo "06" is not 6); attributes are not WeChat's.
const xml = new XMLParser({ parseTagValue: false, ignoreAttributes: true, processEntities: true, htmlEntities: false });

/** A DTD is never WeChat's, and the only way into entity expansion: refused before parsing. */
const DTD = /<!(DOCTYPE|ENTITY)/i;

/**
 * The fields of a message in either format (decided by its first character), or null when it
 * is neither a JSON object nor an <xml> document.
 */
export function parsePushMessage(text: string): PushMessage | null {
  const body = text.trim();
  let fields: unknown;
  try {
    if (body.startsWith('{')) fields = JSON.parse(body);
    else if (body.startsWith('<') && !DTD.test(body)) fields = (xml.parse(body, true) as { xml?: unknown }).xml;
    else return null;
  } catch {
    return null;
  }
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) return null;
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  const scalar = (value: unknown): string | undefined =>
    typeof value === 'string' ? value : typeof value === 'number' && Number.isFinite(value) ? String(value) : undefined;
  for (const [key, value] of Object.entries(fields)) {
    const text = scalar(value);
    if (text !== undefined) out[key] = text;
    else if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      for (const [child, inner] of Object.entries(value)) {
        const innerText = scalar(inner);
        if (innerText !== undefined) out[`${key}.${child}`] = innerText;
      }
    }
  }
  return out;
}
