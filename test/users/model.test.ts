import { expect } from 'chai';
import { dateFormatter, extendJson } from '../../src/users/model';

/** The slow, obviously right way: Intl for every call. */
function reference(timeZone: string, date: Date): string {
  const p: Record<string, string> = {};
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
  for (const part of fmt.formatToParts(date)) p[part.type] = part.value;
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

describe('user model', () => {
  it('formats dates in the configured zone, as Intl does, across DST changes', () => {
    const zones = [
      'Asia/Shanghai',
      'PRC',
      'Asia/Hong_Kong',
      'Asia/Macau',
      'Asia/Taipei',
      'UTC',
      'Etc/UTC',
      'America/New_York',
      'Europe/London',
      'Australia/Lord_Howe',
      'Asia/Kathmandu',
    ];
    // Random instants over 1970..2040 (China's last DST, 1986-1991, and the years before the steady
    // zones' table takes over), plus the minutes around New York's and London's 2026 changes and
    // China's last one (1991-09-15 02:00 local).
    const instants: number[] = [];
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 3000; i++) instants.push(Date.UTC(1970, 0, 1) + Math.floor(random() * 70 * 365.25 * 86400e3));
    for (let i = 0; i < 500; i++) instants.push(Date.UTC(1986, 0, 1) + Math.floor(random() * 7 * 365.25 * 86400e3));
    const changes = [
      Date.UTC(2026, 2, 8, 7),
      Date.UTC(2026, 10, 1, 6),
      Date.UTC(2026, 2, 29, 1),
      Date.UTC(1991, 8, 14, 17),
    ];
    for (const change of changes) {
      for (let s = -3600; s <= 3600; s += 37) instants.push(change + s * 1000);
    }
    for (const zone of zones) {
      const format = dateFormatter(zone);
      for (const ms of instants) expect(format(new Date(ms)), `${zone} ${ms}`).to.equal(reference(zone, new Date(ms)));
    }
  });

  it("formats a steady zone's dates since its last change without Intl, earlier ones with it", () => {
    const made: string[] = [];
    const original = Intl.DateTimeFormat;
    // Counts the formatters made (the ~5 MB of ICU data a process pages in with its first).
    Intl.DateTimeFormat = new Proxy(original, {
      construct: (target, args: ConstructorParameters<typeof original>) => {
        made.push(String(args[1]?.timeZone));
        return new target(...args);
      },
    });
    try {
      const shanghai = dateFormatter('Asia/Shanghai');
      expect(shanghai(new Date(Date.UTC(2026, 11, 7, 17, 30, 5)))).to.equal('2026-12-08 01:30:05');
      expect(shanghai(new Date(Date.UTC(1992, 0, 1)))).to.equal('1992-01-01 08:00:00');
      expect(dateFormatter('UTC')(new Date(0))).to.equal('1970-01-01 00:00:00');
      expect(made).to.deep.equal([]);
      // July 1988: China kept summer time, UTC+9.
      expect(shanghai(new Date(Date.UTC(1988, 6, 1, 0, 0, 0)))).to.equal('1988-07-01 09:00:00');
      expect(dateFormatter('Europe/London')(new Date(Date.UTC(2026, 6, 1)))).to.equal('2026-07-01 01:00:00');
      expect(made).to.deep.equal(['Asia/Shanghai', 'Europe/London']);
    } finally {
      Intl.DateTimeFormat = original;
    }
  });

  it('extends a JSON object text without parsing it', () => {
    const json = JSON.stringify({ user_id: 1, nick_name: '😀"}' });
    expect(JSON.parse(extendJson(json, { token: 'x', token_expires_at: 2 }))).to.deep.equal({
      user_id: 1,
      nick_name: '😀"}',
      token: 'x',
      token_expires_at: 2,
    });
  });
});
