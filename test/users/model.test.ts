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
      'UTC',
      'America/New_York',
      'Europe/London',
      'Australia/Lord_Howe',
      'Asia/Kathmandu',
    ];
    // Random instants over 2000..2040, plus the minutes around New York's and London's 2026 changes.
    const instants: number[] = [];
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 3000; i++) instants.push(Date.UTC(2000, 0, 1) + Math.floor(random() * 40 * 365.25 * 86400e3));
    for (const change of [Date.UTC(2026, 2, 8, 7), Date.UTC(2026, 10, 1, 6), Date.UTC(2026, 2, 29, 1)]) {
      for (let s = -3600; s <= 3600; s += 37) instants.push(change + s * 1000);
    }
    for (const zone of zones) {
      const format = dateFormatter(zone);
      for (const ms of instants) expect(format(new Date(ms)), `${zone} ${ms}`).to.equal(reference(zone, new Date(ms)));
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
