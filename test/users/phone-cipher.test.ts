import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ConfigError, loadConfig, requirePhoneKeys } from '../../src/config';
import { openUserJson } from '../../src/users/model';
import {
  DEVELOPMENT_KEY_TEXT,
  PhoneCipher,
  UnreadablePhoneError,
  isSealed,
  parsePhoneKeys,
} from '../../src/users/phone-cipher';
import { TEST_PHONE_KEYS } from '../helpers/env';

const ROOT = join(__dirname, '..', '..');
const keyText = (id: string) => `${id}:${randomBytes(32).toString('base64')}`;

describe('phone encryption: the cipher and PHONE_KEYS', () => {
  const a = keyText('a');
  const b = keyText('b');

  it('seals with a random IV into v1.<key id>.<iv>.<ciphertext+tag>, and opens for the same openid', () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a));
    const one = cipher.seal('13800138000', 'o1');
    const two = cipher.seal('13800138000', 'o1');
    expect(one).to.match(/^v1\.a\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/);
    expect(one).to.not.equal(two); // a fresh IV each time: equal numbers are not equal values
    expect(one).to.not.include('13800138000');
    expect(cipher.open(one, 'o1')).to.equal('13800138000');
    expect(cipher.open(two, 'o1')).to.equal('13800138000');
    // The longest contact string (32 code points of 4 bytes) fits VARCHAR(255).
    expect(cipher.seal('😀'.repeat(32), 'o1').length).to.be.at.most(255 - 16 + 1);
  });

  it('refuses a value copied to another row (the openid is the AAD), an altered one, or one of a key it lacks', () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a));
    const sealed = cipher.seal('13800138000', 'o1');
    const fail = (value: string, openid: string, c = cipher) => {
      try {
        c.open(value, openid);
      } catch (err) {
        expect(err).to.be.instanceOf(UnreadablePhoneError);
        expect((err as Error).message).to.not.include('13800138000');
        return (err as UnreadablePhoneError).reason;
      }
      return 'opened';
    };
    expect(fail(sealed, 'o2')).to.equal('not this row');
    const body = sealed.slice(sealed.lastIndexOf('.') + 1);
    const flipped = `${body[0] === 'A' ? 'B' : 'A'}${body.slice(1)}`;
    expect(fail(sealed.replace(body, flipped), 'o1')).to.equal('not this row');
    expect(fail(sealed, 'o1', new PhoneCipher(parsePhoneKeys(b)))).to.equal('unknown key');
    expect(fail(`${sealed.slice(0, 40)}!${sealed.slice(41)}`, 'o1')).to.equal('malformed');
  });

  it('binds each value to its whole openid, however long, call after call (the AAD buffer is reused)', () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a));
    const long = `o${'x'.repeat(2000)}`; // past the reused buffer: built for the call instead
    const openids = ['o1', 'o12', long, 'o1é😀', 'o1'];
    const sealed = openids.map((o, i) => cipher.seal(`1380013800${i}`, o));
    for (let round = 0; round < 2; round++) {
      openids.forEach((o, i) => expect(cipher.open(sealed[i]!, o)).to.equal(`1380013800${i}`));
      // Right after a longer openid was written, a shorter one must not read its leftover bytes.
      expect(() => cipher.open(sealed[1]!, 'o1')).to.throw(UnreadablePhoneError);
      expect(() => cipher.open(sealed[0]!, 'o12')).to.throw(UnreadablePhoneError);
      expect(() => cipher.open(sealed[2]!, long.slice(0, -1))).to.throw(UnreadablePhoneError);
    }
    // Trailing spaces are dropped, as the column's PAD SPACE collation compares.
    expect(cipher.open(sealed[0]!, 'o1  ')).to.equal('13800138000');
  });

  it('remembers at most PHONE_MEMO_SIZE opened phones, and a value copied to another row is still refused', () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a), 3);
    const values = ['o1', 'o2', 'o3', 'o4', 'o5'].map((o) => ({ o, v: cipher.seal(`1380000000${o[1]}`, o) }));
    for (const { o, v } of values) expect(cipher.open(v, o)).to.equal(`1380000000${o[1]}`);
    expect(cipher.remembered).to.equal(3);
    // Remembered for o5, copied to o1's row: opened afresh for o1, and refused.
    expect(() => cipher.open(values[4]!.v, 'o1')).to.throw(UnreadablePhoneError);
    expect(cipher.open(values[4]!.v, 'o5')).to.equal('13800000005');
    const none = new PhoneCipher(parsePhoneKeys(a), 0);
    none.open(values[0]!.v, 'o1');
    expect(none.remembered).to.equal(0);
  });

  it('answers from memory only the exact value for the exact openid it opened', () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a), 10);
    const v = cipher.seal('13800138000', 'o1x');
    expect(cipher.open(v, 'o1x')).to.equal('13800138000');
    // Entries are found by the IV: an altered value with the same IV finds this one's entry.
    const last = v.at(-1) === 'A' ? 'B' : 'A';
    for (const altered of [v.slice(0, -1) + last, v + 'AAAA', v.slice(0, -4)]) {
      expect(() => cipher.open(altered, 'o1x')).to.throw(UnreadablePhoneError);
    }
    // An openid that is a prefix or an extension of the remembered one is not it.
    for (const other of ['o1', 'o1xy', 'o1x\0', '']) expect(() => cipher.open(v, other)).to.throw(UnreadablePhoneError);
    expect(cipher.open(v, 'o1x')).to.equal('13800138000');
    expect(cipher.remembered).to.equal(1);
  });

  it('forgets the oldest first, answers a remembered phone without decrypting, and does not remember a row read from MySQL', () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a), 4);
    // Each decryption counted: a remembered phone is answered without one.
    const inner = cipher as unknown as { decrypt(stored: string, openid: string): string };
    const decrypt = inner.decrypt.bind(cipher);
    const decrypted: string[] = [];
    inner.decrypt = (stored, openid) => (decrypted.push(openid), decrypt(stored, openid));
    const values = Array.from({ length: 10 }, (_, i) => ({ o: `o${i}`, v: cipher.seal('13800000000', `o${i}`) }));
    for (const { o, v } of values) cipher.open(v, o);
    expect(cipher.remembered).to.equal(4);
    decrypted.length = 0;
    // o6..o9 are remembered; o5 was forgotten, and opening it forgets o6, the oldest.
    for (const i of [6, 7, 8, 9, 5, 7, 8, 9, 6]) cipher.open(values[i]!.v, values[i]!.o);
    expect(decrypted).to.deep.equal(['o5', 'o6']);
    const fromMysql = cipher.seal('13700000000', 'm');
    cipher.open(fromMysql, 'm', false);
    cipher.open(fromMysql, 'm');
    cipher.open(fromMysql, 'm');
    expect(decrypted.filter((o) => o === 'm')).to.have.length(2);
    expect(cipher.remembered).to.equal(4);
  });

  it("stores '' as '' and reads plain text from before encryption as it is", () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a));
    expect(cipher.seal('', 'o1')).to.equal('');
    expect(cipher.open('', 'o1')).to.equal('');
    // The column held at most 32 characters before: nothing that short is taken for ciphertext.
    const plain = 'v1.a.'.padEnd(32, 'x');
    expect(isSealed(plain)).to.equal(false);
    expect(cipher.open(plain, 'o1')).to.equal(plain);
    expect(cipher.needsRekey(plain)).to.equal(true);
    expect(cipher.needsRekey('')).to.equal(false);
  });

  it('seals with the first key and opens with all of them', () => {
    const old = new PhoneCipher(parsePhoneKeys(a));
    const rotated = new PhoneCipher(parsePhoneKeys(`${b},${a}`));
    const before = old.seal('13800138000', 'o1');
    expect(rotated.open(before, 'o1')).to.equal('13800138000');
    expect(rotated.needsRekey(before)).to.equal(true);
    const after = rotated.seal('13800138000', 'o1');
    expect(after).to.match(/^v1\.b\./);
    expect(rotated.needsRekey(after)).to.equal(false);
    expect(new PhoneCipher(parsePhoneKeys(b)).open(after, 'o1')).to.equal('13800138000');
  });

  it('opens the phone of a cached JSON without parsing it, and leaves one that is not sealed alone', () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a));
    const nick = 'x","phone":"v1.a.trap'; // a quote inside a string is escaped: not the field
    const json = JSON.stringify({ user_id: 1, nick_name: nick, phone: cipher.seal('+1 555 0100', 'o1'), gender: 1 });
    expect(JSON.parse(openUserJson(json, 'o1', cipher))).to.deep.equal({
      user_id: 1,
      nick_name: nick,
      phone: '+1 555 0100',
      gender: 1,
    });
    const legacy = JSON.stringify({ user_id: 1, phone: 'a "quoted" one' });
    expect(openUserJson(legacy, 'o1', cipher)).to.equal(legacy);
    expect(() => openUserJson(json, 'o2', cipher)).to.throw(UnreadablePhoneError);
    // The field is looked for from the end: a trap after it is no field either.
    const trailing = JSON.stringify({ user_id: 1, phone: cipher.seal('13800138000', 'o1'), nick_name: nick });
    expect(JSON.parse(openUserJson(trailing, 'o1', cipher)).phone).to.equal('13800138000');
  });

  it('appends the session fields in the same splice, sealed phone or not', () => {
    const cipher = new PhoneCipher(parsePhoneKeys(a), 10);
    const fields = { token: 't', expires_at: 2 };
    const sealed = JSON.stringify({ user_id: 1, phone: cipher.seal('13800138000', 'o1'), ctime: 'c' });
    expect(JSON.parse(openUserJson(sealed, 'o1', cipher, fields))).to.deep.equal({
      user_id: 1,
      phone: '13800138000',
      ctime: 'c',
      ...fields,
    });
    for (const phone of ['', '13800138000']) {
      const plain = JSON.stringify({ user_id: 1, phone });
      expect(JSON.parse(openUserJson(plain, 'o1', cipher, fields))).to.deep.equal({ user_id: 1, phone, ...fields });
    }
  });

  it('remembers a copy of the value, not the cached JSON it was cut from', () => {
    // V8 keeps a whole string alive for any slice of it: 2,000 remembered slices of 40 KB
    // profiles would hold ~80 MB. With copies the memo holds ~0.5 MB.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const cipher = new PhoneCipher(parsePhoneKeys(a), 2_000);
    const pad = '档'.repeat(20_000); // UTF-16, as a profile with an emoji or a Chinese nickname is
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 2_000; i++) {
      const profile = JSON.stringify({ nick_name: pad, phone: cipher.seal('13800138000', `o${i}`) });
      openUserJson(profile, `o${i}`, cipher);
    }
    gc();
    expect(cipher.remembered).to.equal(2_000);
    expect(process.memoryUsage().heapUsed - before).to.be.below(8 * 1024 * 1024);
  });

  describe('PHONE_KEYS', () => {
    const production = (PHONE_KEYS?: string) =>
      loadConfig({ NODE_ENV: 'production', ...(PHONE_KEYS === undefined ? {} : { PHONE_KEYS }) });

    it('is required in production, naming the variable (the knex CLI, which needs no keys, still loads)', () => {
      for (const unset of [undefined, '', '  ']) {
        const config = production(unset);
        expect(() => requirePhoneKeys(config)).to.throw(ConfigError, /PHONE_KEYS: required/);
      }
      expect(requirePhoneKeys(production(TEST_PHONE_KEYS)).map((k) => k.id)).to.deep.equal(['test']);
    });

    it('stops a production start without keys with one line naming it, before connecting to anything', function () {
      this.timeout(20_000);
      const env: NodeJS.ProcessEnv = { ...process.env, NODE_ENV: 'production', PHONE_KEYS: '' };
      // Unreachable stores: the refusal must come first, not a connection error.
      env.DATABASE_URL = 'mysql://root@127.0.0.1:9/none';
      env.REDIS_URL = 'redis://127.0.0.1:9/0';
      const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
        cwd: ROOT,
        env,
        encoding: 'utf8',
        timeout: 15_000,
      });
      expect(run.status).to.equal(1);
      expect(run.stderr.trim().split('\n')).to.deep.equal([
        'invalid configuration: PHONE_KEYS: required when NODE_ENV=production (docs/phone-encryption.md)',
      ]);
      expect(run.stdout).to.equal('');
    });

    it('stops the start at a malformed key, naming the variable and the key, never echoing it', () => {
      const material = randomBytes(31).toString('base64'); // 31 bytes
      for (const [text, named] of [
        [`k1:${material}`, 'key 1 ("k1")'],
        [`${a},nocolon`, 'key 2'],
        [`${a},bad.id:${randomBytes(32).toString('base64')}`, 'key 2'],
        [`${a},${b},c:${randomBytes(32).toString('base64').slice(0, -4)}!!!=`, 'key 3 ("c")'],
        [`${a},${a}`, 'key 2: the id "a" is used twice'],
      ] as const) {
        for (const NODE_ENV of ['production', 'development']) {
          let message = '';
          try {
            loadConfig({ NODE_ENV, PHONE_KEYS: text });
          } catch (err) {
            expect(err).to.be.instanceOf(ConfigError);
            message = (err as Error).message;
          }
          expect(message, text).to.include('PHONE_KEYS').and.include(named);
          expect(message).to.not.include(material).and.not.include(a.slice(2));
        }
      }
    });

    it('uses the development key outside production, and refuses it in production', () => {
      const dev = loadConfig({ NODE_ENV: 'development' });
      expect(dev.phone.development).to.equal(true);
      expect(dev.phone.keys.map((k) => k.id)).to.deep.equal(['dev']);
      expect(loadConfig({ NODE_ENV: 'development', PHONE_KEYS: a }).phone.development).to.equal(false);
      expect(() => production(`${a},${DEVELOPMENT_KEY_TEXT}`)).to.throw(
        ConfigError,
        /key 2 is the published development key/,
      );
    });
  });
});
