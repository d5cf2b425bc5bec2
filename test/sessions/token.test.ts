import { expect } from 'chai';
import keySlot from 'cluster-key-slot';
import { keyLayout } from '../../src/redis/keys';
import { draftSession } from '../../src/sessions/store';
import { isTokenShaped, newToken, slotOf } from '../../src/sessions/token';

describe('session tokens', () => {
  it('are minted into any asked-for Redis Cluster slot, and stay 32 base64url characters', () => {
    for (let slot = 0; slot < 16384; slot += 1) {
      const token = newToken(slot);
      expect(isTokenShaped(token), token).to.equal(true);
      expect(keySlot(`session:{${token}}`), token).to.equal(slot);
    }
  });

  it('keep 174 random bits: the first 29 characters vary freely, only the last 3 follow the slot', () => {
    const tokens = Array.from({ length: 2000 }, () => newToken(1234));
    expect(new Set(tokens).size).to.equal(2000);
    // Every position of the random part takes many values; the tail is a function of the rest.
    for (let i = 0; i < 29; i++) expect(new Set(tokens.map((t) => t[i])).size, `position ${i}`).to.be.greaterThan(55);
    expect(new Set(tokens.map((t) => t.slice(0, 29))).size).to.equal(2000);
  });

  it('compute a key slot as Redis does, for any key', () => {
    const long = 'k'.repeat(5000);
    for (const key of ['', 'a', 'user:{o1}:profile', '{}x', 'a{b}c{d}', '张三{😀}', long, `${long}{t}`]) {
      expect(slotOf(key), key.slice(0, 20)).to.equal(keySlot(key));
    }
  });

  it("share the slot of their user's keys, whatever the openid and the key prefix", () => {
    const settings = { ttlSeconds: 600, idleSeconds: 60, maxPerUser: 20 };
    for (const prefix of ['', 'svc:', 'a{b}:']) {
      const keys = keyLayout(prefix);
      for (const openid of ['o1', 'oAbC-123_x', '张三', 'has}brace', '{}', 'x{y}z', '😀'.repeat(20)]) {
        const d = draftSession(keys, settings, openid);
        const slot = keySlot(keys.profile(openid));
        expect(keySlot(d.key), `${prefix} ${openid}`).to.equal(slot);
        expect(keySlot(d.index), `${prefix} ${openid}`).to.equal(slot);
        expect(d.key).to.equal(`${prefix}session:{${d.token}}`);
      }
    }
  });

  it('draft the documented session JSON around the user_id', () => {
    const d = draftSession(
      keyLayout('p:'),
      { ttlSeconds: 600, idleSeconds: 60, maxPerUser: 20 },
      'o"\\1',
      1_700_000_000_123,
    );
    expect(JSON.parse(`${d.head}42${d.tail}`)).to.deep.equal({
      v: 1,
      user_id: 42,
      openid: 'o"\\1',
      issued_at: 1_700_000_000,
      expires_at: 1_700_000_600,
      idle_timeout: 60,
    });
    expect(d.expires_at).to.equal(1_700_000_600);
    expect(d.args).to.deep.equal([
      d.token,
      60_000,
      1_700_000_600_123,
      1_700_000_000_123,
      600_000,
      20,
      'p:session:{',
      '}',
    ]);
  });
});
