import type { Context } from 'koa';
import { ServiceError } from '../errors';
import type { Session, SessionReader } from '../sessions/store';
import { isOpenid } from '../wechat/openid';
import { requestToken, type AuthMode } from './auth';
import type { RouteGuard } from './route';

export interface IdentitySettings {
  authMode: AuthMode;
  /**
   * A header that a trusted gateway sets to the caller's openid (WeChat Cloud Run's
   * `x-wx-openid`), or '' when there is no such gateway: the header is then ignored, since any
   * client can send it.
   */
  trustedOpenidHeader: string;
  /** The gateway's unionid header (`x-wx-unionid`); read only beside trustedOpenidHeader. */
  trustedUnionidHeader: string;
}

export interface IdentityProvers {
  sessions: SessionReader;
  /** Whose a wx.login code is, asked of WeChat; a refusal is a ServiceError ('upstream'). */
  exchangeCode(jsCode: string): Promise<{ openid: string; unionid?: string }>;
}

/** The body fields that name the caller: without either, only a header can (the OpenAPI document's one-of). */
export const IDENTITY_FIELDS = ['openid', 'js_code'] as const;

/** What an identifying route's input holds once the guard has run (see users/schemas.ts). */
interface IdentityInput {
  openid?: string;
  js_code?: string;
  unionid?: string;
}

interface Proof {
  openid: string;
  unionid?: string;
  /** For the answer's message: what proved it. */
  what: string;
}

const refuse = (message: string) => new ServiceError('unauthenticated', message);

/**
 * Settles whose openid a login is for. A js_code (asked of WeChat), the trusted gateway's
 * header, or in strict mode a live session token each prove an openid; a body openid that
 * differs from the proven one is refused (-10) in either mode. Without proof, strict mode
 * refuses (-10) before anything is read or written, while openid mode (the document's
 * contract) takes the body's openid as it is. The openid settled on, and the unionid that
 * came with the proof, are left in the input for the handler.
 */
export function identityGuard(settings: IdentitySettings, provers: IdentityProvers): RouteGuard {
  const openidHeader = settings.trustedOpenidHeader.toLowerCase();
  const unionidHeader = settings.trustedUnionidHeader.toLowerCase();

  return (route) => (route.identifies ? (ctx, input) => settle(ctx, input as IdentityInput) : null);

  /** Synchronous unless a proof must be asked for (a js_code, a token): the usual launch waits for nothing. */
  function settle(ctx: Context, input: IdentityInput): Promise<void> | void {
    const gateway = fromGateway(ctx);
    if (input.js_code !== undefined) return fromCode(input.js_code, gateway).then((proof) => accept(input, proof));
    if (gateway) return accept(input, gateway);
    // In openid mode a token adds nothing the body's openid does not already grant.
    if (settings.authMode !== 'token') return accept(input, null);
    const token = requestToken(ctx);
    return token ? fromToken(token).then((proof) => accept(input, proof)) : accept(input, null);
  }

  function accept(input: IdentityInput, proof: Proof | null): void {
    if (proof) {
      if (input.openid !== undefined && input.openid !== proof.openid) {
        throw refuse(`the ${proof.what} is for another openid than the body names`);
      }
      input.openid = proof.openid;
      if (proof.unionid) input.unionid = proof.unionid;
      return;
    }
    if (settings.authMode === 'token') {
      throw refuse('an openid alone proves nothing: send a js_code or a session token of this openid');
    }
    if (input.openid === undefined) {
      throw new ServiceError('invalid', `${IDENTITY_FIELDS.map((f) => `"${f}"`).join(' or ')} is required`);
    }
  }

  async function fromCode(jsCode: string, gateway: Proof | null): Promise<Proof> {
    const wx = await provers.exchangeCode(jsCode);
    if (gateway && gateway.openid !== wx.openid)
      throw refuse('the js_code is for another openid than the gateway says');
    return { openid: wx.openid, unionid: wx.unionid ?? gateway?.unionid, what: 'js_code' };
  }

  async function fromToken(token: string): Promise<Proof> {
    let session: Session | null;
    try {
      session = await provers.sessions.verify(token);
    } catch (err) {
      throw new ServiceError('unavailable', 'the session store is unavailable, try again', { cause: err });
    }
    if (!session) throw refuse('invalid or expired token');
    return { openid: session.openid, unionid: session.unionid ?? undefined, what: 'session token' };
  }

  function fromGateway(ctx: Context): Proof | null {
    if (!openidHeader) return null;
    const openid = ctx.get(openidHeader);
    if (!openid) return null;
    // The schemas hold request fields to WeChat's shape; a gateway's headers are held to it here.
    if (!isOpenid(openid)) throw refuse(`the ${openidHeader} header is not an openid`);
    const unionid = unionidHeader ? ctx.get(unionidHeader) : '';
    return {
      openid,
      ...(isOpenid(unionid) ? { unionid } : {}),
      what: `${openidHeader} header`,
    };
  }
}
