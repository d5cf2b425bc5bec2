import type { Middleware } from 'koa';
import { isIP } from 'node:net';
import type { Logger } from '../logger';

/** TRUST_PROXY above this is refused by the configuration: no real chain is that long. */
export const MAX_PROXY_HOPS = 16;

/** Longest address text an entry may have: a bracketed IPv6 with a zone and a port. */
const MAX_ENTRY = 64;

/**
 * Only this many characters from the right end of X-Forwarded-For are read. The proxies we
 * trust append on the right, so the tail holds every entry we may use (the longest chain of
 * the longest entries); what is cut off on the left is the client's own claims.
 */
export const FORWARDED_FOR_TAIL = MAX_PROXY_HOPS * (MAX_ENTRY + 2);

/**
 * The client of a request that cannot be told (X-Forwarded-For shorter than the proxy chain,
 * or not an address where the client should be). It is no address, so no client can name it,
 * and every such request shares its one budget: the limits fail closed, not open.
 */
export const UNATTRIBUTED = 'unattributed';

export type Attribution = 'socket' | 'forwarded' | 'short' | 'invalid';

export interface ClientAddress {
  /** Canonical IPv4 (also for IPv4-mapped IPv6) or compressed lowercase IPv6; or UNATTRIBUTED. */
  address: string;
  how: Attribution;
}

function hex(group: number): string {
  return group.toString(16);
}

/** Eight 16-bit groups of an address net.isIP has accepted as IPv6 (zone id removed). */
function groupsOf(v6: string): number[] {
  let text = v6.toLowerCase();
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const [a, b, c, d] = tail.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, lastColon + 1)}${hex((a << 8) | b)}:${hex((c << 8) | d)}`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = rest ? rest.split(':') : [];
  const zeros = rest === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((g) => parseInt(g, 16));
}

/** RFC 5952 text: lowercase, no leading zeros, the longest run (first on a tie) of 2+ zero groups as `::`. */
function compress(groups: number[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return groups.map(hex).join(':');
  const before = groups.slice(0, best).map(hex).join(':');
  const after = groups
    .slice(best + bestLen)
    .map(hex)
    .join(':');
  return `${before}::${after}`;
}

/**
 * The canonical form of one address as a proxy or the socket writes it, or null when it is
 * not one. Accepts a port (`1.2.3.4:5678`, `[2001:db8::1]:443`, as some load balancers
 * append) and a zone id, which are dropped; IPv4-mapped IPv6 becomes the IPv4 address, so one
 * client has one text whether it arrives over IPv4 or a dual-stack socket.
 */
export function canonicalIp(raw: string): string | null {
  let text = raw.trim();
  if (!text || text.length > MAX_ENTRY) return null;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || !/^(:\d{1,5})?$/.test(text.slice(close + 1))) return null;
    text = text.slice(1, close);
  } else if (/^[\d.]+:\d{1,5}$/.test(text)) {
    text = text.slice(0, text.indexOf(':'));
  }
  const family = isIP(text);
  if (family === 4) return text;
  if (family !== 6) return null;
  const zone = text.indexOf('%');
  const groups = groupsOf(zone < 0 ? text : text.slice(0, zone));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const [hi, lo] = [groups[6]!, groups[7]!];
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return compress(groups);
}

/**
 * What the rate limits count a client by: the IPv4 address, or the /64 prefix of an IPv6 one
 * (`2001:db8:1:2::/64`), since one subscriber gets a whole /64 and could otherwise take a new
 * address per request. Anything else (UNATTRIBUTED, a raw socket text) is canonicalised first,
 * so the key is always short.
 */
export function limitKey(address: string): string {
  const ip = canonicalIp(address);
  if (ip === null) return UNATTRIBUTED;
  if (!ip.includes(':')) return ip;
  const groups = groupsOf(ip);
  return `${compress([...groups.slice(0, 4), 0, 0, 0, 0])}/64`;
}

/** The entry `hops` from the right of X-Forwarded-For, read from the tail only. */
function fromRight(header: string, hops: number): { entry?: string; how: 'short' | 'invalid' | 'forwarded' } {
  const cut = header.length > FORWARDED_FOR_TAIL;
  const text = cut ? header.slice(-FORWARDED_FOR_TAIL) : header;
  let end = text.length;
  for (let i = 1; i <= hops; i++) {
    const comma = end > 0 ? text.lastIndexOf(',', end - 1) : -1;
    if (i === hops) {
      // Reaching the cut edge means the entry was longer than any address: not one.
      if (comma < 0 && cut) return { how: 'invalid' };
      return { entry: text.slice(comma + 1, end), how: 'forwarded' };
    }
    if (comma < 0) return { how: cut ? 'invalid' : 'short' };
    end = comma;
  }
  return { how: 'short' };
}

export interface ClientIpRule {
  readonly hops: number;
  /** For the start-up log line. */
  readonly description: { trustProxy: number | false; rule: string };
  resolve(socketAddress: string | undefined, forwardedFor: string | undefined): ClientAddress;
}

const ORDINAL = ['', '1st', '2nd', '3rd'];

/**
 * TRUST_PROXY as a rule. 0: the socket's peer is the client and X-Forwarded-For is ignored.
 * N: the client is the X-Forwarded-For entry N from the right (each of the N proxies appends
 * the address it was connected from); entries left of it are the client's own claims and are
 * never read. A request with no X-Forwarded-For at all came straight to the port, so its peer
 * is the client. A header with fewer than N entries, or no address at the Nth, is UNATTRIBUTED.
 */
export function clientIpRule(hops: number): ClientIpRule {
  if (!Number.isInteger(hops) || hops < 0 || hops > MAX_PROXY_HOPS) throw new RangeError(`bad hop count ${hops}`);
  const nth = ORDINAL[hops] ?? `${hops}th`;
  const socket = (raw: string | undefined): ClientAddress => {
    const address = raw === undefined ? null : canonicalIp(raw);
    return address === null ? { address: UNATTRIBUTED, how: 'invalid' } : { address, how: 'socket' };
  };
  return {
    hops,
    description: {
      trustProxy: hops === 0 ? false : hops,
      rule:
        hops === 0
          ? 'socket peer address; X-Forwarded-For ignored'
          : `X-Forwarded-For, ${nth} entry from the right (socket peer when the header is absent)`,
    },
    resolve(socketAddress, forwardedFor) {
      if (hops === 0 || forwardedFor === undefined) return socket(socketAddress);
      const picked = fromRight(forwardedFor, hops);
      const address = picked.entry === undefined ? null : canonicalIp(picked.entry);
      if (address === null) return { address: UNATTRIBUTED, how: picked.how === 'short' ? 'short' : 'invalid' };
      return { address, how: 'forwarded' };
    },
  };
}

/**
 * Sets ctx.ip (Koa's own proxy handling stays off: it takes the left-most entry, which the
 * client writes). Misconfiguration shows in requests, not at start, so each kind is warned
 * about once per process: enough for an operator to see, too little to flood a log.
 */
export function clientIp(rule: ClientIpRule, logger: Logger): Middleware {
  const warned = new Set<string>();
  const warnOnce = (kind: string, fields: Record<string, unknown>, msg: string) => {
    if (warned.has(kind)) return;
    warned.add(kind);
    logger.warn({ ...fields, trustProxy: rule.description.trustProxy }, msg);
  };
  return (ctx, next) => {
    const header = ctx.req.headers['x-forwarded-for'];
    const forwardedFor = Array.isArray(header) ? header.join(', ') : header;
    const client = rule.resolve(ctx.req.socket.remoteAddress, forwardedFor);
    ctx.request.ip = client.address;
    if (rule.hops === 0 && forwardedFor !== undefined) {
      warnOnce(
        'ignored',
        { peer: client.address },
        'a request carried X-Forwarded-For while TRUST_PROXY is off: if a proxy forwards to this port, ' +
          'all its clients share its address and one rate-limit budget (see TRUST_PROXY)',
      );
    } else if (client.how === 'short') {
      warnOnce(
        'short',
        { peer: ctx.req.socket.remoteAddress, entries: forwardedFor!.split(',').length },
        'X-Forwarded-For has fewer entries than TRUST_PROXY hops (a proxy bypassed or not appending, ' +
          'or TRUST_PROXY too high): such requests share one rate-limit budget',
      );
    } else if (client.how === 'invalid') {
      warnOnce(
        'invalid',
        { peer: ctx.req.socket.remoteAddress },
        'no valid address where the client should be in X-Forwarded-For (or on the socket): ' +
          'such requests share one rate-limit budget',
      );
    }
    return next();
  };
}
