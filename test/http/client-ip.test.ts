import { expect } from 'chai';
import {
  canonicalIp,
  clientIpRule,
  FORWARDED_FOR_TAIL,
  limitKey,
  MAX_PROXY_HOPS,
  UNATTRIBUTED,
} from '../../src/http/client-ip';

describe('client IP', () => {
  describe('canonicalIp', () => {
    const cases: [string, string | null][] = [
      ['1.2.3.4', '1.2.3.4'],
      [' 1.2.3.4\t', '1.2.3.4'],
      ['1.2.3.4:5678', '1.2.3.4'],
      ['::ffff:1.2.3.4', '1.2.3.4'],
      ['::FFFF:0102:0304', '1.2.3.4'],
      ['[::ffff:10.0.0.1]:443', '10.0.0.1'],
      ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['[2001:db8::1]:8080', '2001:db8::1'],
      ['[2001:db8::1]', '2001:db8::1'],
      ['fe80::1%eth0', 'fe80::1'],
      ['::1', '::1'],
      ['::', '::'],
      ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2:3:4:5:6'],
      ['', null],
      ['unknown', null],
      ['_hidden', null],
      ['01.2.3.4', null],
      ['1.2.3.256', null],
      ['1.2.3', null],
      ['[2001:db8::1', null],
      ['[2001:db8::1]x', null],
      ['2001:db8::1:80', '2001:db8::1:80'],
      ['1.2.3.4, 5.6.7.8', null],
      [`${'1'.repeat(60)}.2.3.4`, null],
      ['for=1.2.3.4', null],
    ];
    for (const [input, expected] of cases) {
      it(`${JSON.stringify(input)} -> ${expected}`, () => expect(canonicalIp(input)).to.equal(expected));
    }
  });

  describe('limitKey', () => {
    it('is the IPv4 address itself', () => expect(limitKey('203.0.113.9')).to.equal('203.0.113.9'));
    it('is the /64 of an IPv6 address, in canonical form', () => {
      expect(limitKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd')).to.equal('2001:db8:1:2::/64');
      expect(limitKey('2001:DB8:1:2::1')).to.equal('2001:db8:1:2::/64');
      expect(limitKey('2001:db8::1')).to.equal('2001:db8::/64');
      expect(limitKey('2001:db8:1:3::1')).to.equal('2001:db8:1:3::/64');
    });
    it('counts IPv4-mapped IPv6 as the IPv4 address, not as the shared ::/64', () => {
      expect(limitKey('::ffff:198.51.100.7')).to.equal('198.51.100.7');
      expect(limitKey('::ffff:198.51.100.8')).to.equal('198.51.100.8');
    });
    it('turns anything that is not an address into the one unattributed key', () => {
      expect(limitKey(UNATTRIBUTED)).to.equal(UNATTRIBUTED);
      expect(limitKey('x'.repeat(6000))).to.equal(UNATTRIBUTED);
      expect(limitKey('')).to.equal(UNATTRIBUTED);
    });
  });

  describe('rule', () => {
    const peer = '::ffff:10.0.0.5';

    it('without proxies, is the socket peer and ignores X-Forwarded-For', () => {
      const rule = clientIpRule(0);
      expect(rule.resolve(peer, '6.6.6.6')).to.deep.equal({ address: '10.0.0.5', how: 'socket' });
      expect(rule.resolve(peer, undefined)).to.deep.equal({ address: '10.0.0.5', how: 'socket' });
      expect(rule.resolve(undefined, undefined)).to.deep.equal({ address: UNATTRIBUTED, how: 'invalid' });
      expect(rule.description).to.deep.equal({
        trustProxy: false,
        rule: 'socket peer address; X-Forwarded-For ignored',
      });
    });

    it('takes the entry as many hops from the right as there are proxies', () => {
      expect(clientIpRule(1).resolve(peer, '6.6.6.6, 1.1.1.1').address).to.equal('1.1.1.1');
      expect(clientIpRule(2).resolve(peer, '6.6.6.6, 1.1.1.1, 10.0.0.9').address).to.equal('1.1.1.1');
      expect(clientIpRule(3).resolve(peer, '1.1.1.1,10.0.0.8,10.0.0.9').address).to.equal('1.1.1.1');
      expect(clientIpRule(2).description).to.deep.equal({
        trustProxy: 2,
        rule: 'X-Forwarded-For, 2nd entry from the right (socket peer when the header is absent)',
      });
    });

    it('never reads what the client wrote left of its own entry', () => {
      const rule = clientIpRule(1);
      for (const claims of ['', '9.9.9.9, ', 'garbage, ', `${'x'.repeat(6000)}, `, '1.1.1.1, 2.2.2.2, ']) {
        expect(rule.resolve(peer, `${claims}203.0.113.7`)).to.deep.equal({ address: '203.0.113.7', how: 'forwarded' });
      }
    });

    it('reads several X-Forwarded-For lines as Node joins them (", "), the last line rightmost', () => {
      expect(clientIpRule(2).resolve(peer, '6.6.6.6, 203.0.113.7, 10.0.0.9').address).to.equal('203.0.113.7');
    });

    it('with no header, the peer came straight to the port: it is the client', () => {
      expect(clientIpRule(2).resolve(peer, undefined)).to.deep.equal({ address: '10.0.0.5', how: 'socket' });
    });

    it('with fewer entries than proxies, is unattributed: neither the entries nor the peer is known to be the client', () => {
      expect(clientIpRule(2).resolve(peer, '203.0.113.7')).to.deep.equal({ address: UNATTRIBUTED, how: 'short' });
      expect(clientIpRule(3).resolve(peer, '1.1.1.1, 2.2.2.2')).to.deep.equal({ address: UNATTRIBUTED, how: 'short' });
    });

    it('with no address at the client position, is unattributed', () => {
      const rule = clientIpRule(1);
      for (const header of ['', 'unknown', '6.6.6.6, ', '6.6.6.6,,', '1.2.3.4 5.6.7.8', 'x'.repeat(6000)]) {
        expect(rule.resolve(peer, header)).to.deep.equal({ address: UNATTRIBUTED, how: 'invalid' });
      }
      expect(clientIpRule(2).resolve(peer, ', 10.0.0.9')).to.deep.equal({ address: UNATTRIBUTED, how: 'invalid' });
    });

    it('reads only the tail of an overlong header, whatever its length or number of entries', () => {
      const rule = clientIpRule(2);
      const claims = Array.from({ length: 5000 }, (_, i) => `10.${i >> 8}.${i & 255}.1`).join(', ');
      expect(claims.length).to.be.above(50_000);
      expect(rule.resolve(peer, `${claims}, 203.0.113.7, 10.0.0.9`).address).to.equal('203.0.113.7');
      // The tail is cut inside one long entry: that entry is not an address.
      const long = `${'1'.repeat(FORWARDED_FOR_TAIL)}, 10.0.0.9`;
      expect(rule.resolve(peer, long)).to.deep.equal({ address: UNATTRIBUTED, how: 'invalid' });
    });

    it('normalises the address it picks (IPv6 compressed, IPv4-mapped as IPv4)', () => {
      const rule = clientIpRule(1);
      expect(rule.resolve(peer, '2001:DB8:0:0::7').address).to.equal('2001:db8::7');
      expect(rule.resolve(peer, '::ffff:203.0.113.7').address).to.equal('203.0.113.7');
    });

    it('refuses hop counts outside 0..MAX_PROXY_HOPS', () => {
      expect(() => clientIpRule(-1)).to.throw(RangeError);
      expect(() => clientIpRule(MAX_PROXY_HOPS + 1)).to.throw(RangeError);
      expect(() => clientIpRule(1.5)).to.throw(RangeError);
      expect(clientIpRule(MAX_PROXY_HOPS).description.rule).to.include('16th entry');
    });

    it('finds the deepest entry of the longest chain inside the tail it reads', () => {
      // Entries of the longest accepted text (64 characters), the client's included.
      const longest = '[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%abcdefghijklmnop]:65535';
      expect(longest).to.have.length(64);
      const header = [`${'6.'.repeat(3000)}6`, ...Array<string>(MAX_PROXY_HOPS).fill(longest)].join(', ');
      expect(clientIpRule(MAX_PROXY_HOPS).resolve(peer, header)).to.deep.equal({
        address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
        how: 'forwarded',
      });
    });
  });
});
