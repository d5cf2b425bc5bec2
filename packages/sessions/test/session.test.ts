import { expect } from 'chai';
import keySlot from 'cluster-key-slot';
import {
  bearerToken,
  formatSession,
  isTokenShaped,
  parseSession,
  SESSION_JSON_HEAD,
  SESSION_VERSION,
  sessionJsonTail,
  sessionKeys,
  UNIONID_FIELD,
  unionidLiteral,
  type Session,
} from '../src';

const session: Session = {
  v: 1,
  user_id: 42,
  unionid: 'u"\\1',
  openid: 'o张三"\\{}',
  issued_at: 1_700_000_000,
  expires_at: 1_700_604_800,
  idle_timeout: 172_800,
};

describe('wechat-user-sessions: the key and JSON contract', () => {
  it('names the session and user-sessions keys under the prefix, hash-tagged', () => {
    const keys = sessionKeys('svc:');
    const token = 'A'.repeat(32);
    expect(keys.prefix).to.equal('svc:');
    expect(keys.session(token)).to.equal(`svc:session:{${token}}`);
    expect(keys.userSessions('o1')).to.equal('svc:user:{o1}:sessions');
    // A session key lives in its token's slot, the index in its openid's, whatever the prefix
    // (one without braces: those would be the tag).
    for (const prefix of ['', 'svc:', 'test:1:']) {
      expect(keySlot(sessionKeys(prefix).session(token))).to.equal(keySlot(token));
      expect(keySlot(sessionKeys(prefix).userSessions('o1'))).to.equal(keySlot('o1'));
    }
  });

  it('lays the JSON out as JSON.stringify of a Session, key order kept, from its pieces', () => {
    expect(SESSION_VERSION).to.equal(1);
    const { v: _v, ...rest } = session;
    const json = formatSession(rest);
    expect(json).to.equal(JSON.stringify(session));
    expect(
      `${SESSION_JSON_HEAD}42${UNIONID_FIELD}${unionidLiteral(session.unionid)}${sessionJsonTail(session)}`,
    ).to.equal(json);
    expect(formatSession({ ...rest, user_id: null, unionid: null })).to.equal(
      JSON.stringify({ ...session, user_id: null, unionid: null }),
    );
    expect(unionidLiteral(undefined)).to.equal('null');
    expect(unionidLiteral('')).to.equal('null');
  });

  it('parses a stored session, and a v1 session from before the unionid field', () => {
    expect(parseSession(JSON.stringify(session))).to.deep.equal(session);
    const { unionid: _u, ...older } = session;
    expect(parseSession(JSON.stringify(older))).to.deep.equal({ ...session, unionid: null });
    expect(parseSession(JSON.stringify({ ...session, user_id: null }))).to.deep.equal({ ...session, user_id: null });
  });

  it('ignores fields it does not know: a field added within version 1 changes nothing', () => {
    expect(parseSession(JSON.stringify({ ...session, scope: ['orders'], device: { id: 1 } }))).to.deep.equal(session);
  });

  it('refuses versions it does not know, and anything that is not a session', () => {
    for (const raw of [
      JSON.stringify({ ...session, v: 2 }),
      JSON.stringify({ ...session, v: '1' }),
      JSON.stringify({ ...session, v: undefined }),
      JSON.stringify({ ...session, user_id: '42' }),
      JSON.stringify({ ...session, user_id: 1.5 }),
      JSON.stringify({ ...session, unionid: 7 }),
      JSON.stringify({ ...session, openid: '' }),
      JSON.stringify({ ...session, expires_at: 'soon' }),
      JSON.stringify({ ...session, idle_timeout: null }),
      JSON.stringify([session]),
      'null',
      '42',
      '{"v":1',
      '',
    ]) {
      expect(parseSession(raw), raw).to.equal(null);
    }
  });

  it('knows a token by its shape, and takes it from a Bearer header', () => {
    expect(isTokenShaped('Ab-_'.repeat(8))).to.equal(true);
    for (const bad of ['A'.repeat(31), 'A'.repeat(33), `${'A'.repeat(31)}=`, `${'A'.repeat(31)}\n`, 42, null]) {
      expect(isTokenShaped(bad), String(bad)).to.equal(false);
    }
    expect(bearerToken('Bearer abc')).to.equal('abc');
    expect(bearerToken('bearer   abc  ')).to.equal('abc');
    expect(bearerToken('Basic abc')).to.equal(undefined);
    expect(bearerToken('Bearer a b')).to.equal(undefined);
    expect(bearerToken(undefined)).to.equal(undefined);
  });
});
