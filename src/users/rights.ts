import { ServiceError } from '../errors';
import type { Logger } from '../logger';
import type { MediaStore } from '../media/store';
import type { Session } from '../sessions/store';
import type { User } from './model';
import type { DeletionReason } from './repository';
import type { LiveSession, UserService } from './service';

export interface AccountRightsDeps {
  users: Pick<UserService, 'proveCode' | 'deleteUser' | 'logout' | 'holdings' | 'get' | 'update'>;
  media: Pick<MediaStore, 'keyOf' | 'remove' | 'removeByPrefix'>;
  logger: Logger;
}

/** What exportData answers: everything held about the user (PIPL art. 45), no secret. */
export interface DataExport {
  user: User;
  sessions: LiveSession[];
  session_key_held: boolean;
  /** Whether `user.avatar` is a file this service stores (removed with the account). */
  avatar_stored_here: boolean;
}

/** The profile fields WeChat's push may clear (push-events.ts). */
export type ClearableField = 'nick_name' | 'avatar' | 'phone';

const refuse = (message: string) => new ServiceError('unauthenticated', message);

/** The prefix of a user's avatar files in the media store: avatar/<user_id>_… (flows.ts names them). */
const avatarPrefix = (userId: number) => `avatar/${userId}_`;

/**
 * The user's rights over their data: a copy of it, its deletion, and what WeChat's
 * authorization events take back. Every change of a profile goes through UserService.update
 * (its fenced path) or deleteUser (fenced the same way), so no read is stale once answered.
 */
export class AccountRights {
  constructor(private readonly deps: AccountRightsDeps) {}

  /**
   * deleteAccount: the session's user, proven again by a fresh wx.login code of the same
   * openid (a stolen token alone deletes nothing). Without either, -10 and nothing changes.
   */
  async deleteAccount(session: Session, jsCode: string | undefined): Promise<void> {
    if (jsCode === undefined) throw refuse('deleting an account needs a js_code from a fresh wx.login');
    let proven: { openid: string };
    try {
      proven = await this.deps.users.proveCode(jsCode);
    } catch (err) {
      // WeChat's refusal (used, expired or foreign code) proves nothing; a timeout or WeChat's
      // "system busy" (errcode -1) stays -2, worth a retry.
      const errcode =
        err instanceof ServiceError && err.kind === 'upstream' && (err.cause as { errcode?: unknown })?.errcode;
      if (typeof errcode === 'number' && errcode !== -1) {
        throw refuse('the js_code is not a fresh wx.login code');
      }
      throw err;
    }
    if (proven.openid !== session.openid) throw refuse('the js_code is for another openid than the token');
    await this.deleteUser(session.openid, 'user', session.user_id);
  }

  /**
   * Deletes the user of an openid: the row (recorded in account_deletions), then its avatar
   * files, then its sessions, cached profile and session_key. Sessions go last so that a
   * caller whose deletion failed half-way can retry with the same token; a retry finds the row
   * gone and finishes the rest, by the user_id the session carries. Idempotent.
   */
  async deleteUser(openid: string, reason: DeletionReason, knownUserId: number | null = null): Promise<void> {
    const { users, logger } = this.deps;
    const row = await users.deleteUser(openid, reason);
    const userId = row?.id ?? knownUserId;
    if (userId !== null) {
      try {
        await this.removeAvatarFiles(userId, row?.avatar);
      } catch (err) {
        logger.error({ err: (err as Error)?.message, userId }, 'avatar files of a deleted user not removed');
        throw new ServiceError('unavailable', 'the media store is unavailable, try again', { cause: err });
      }
    }
    await users.logout(openid);
    if (row) logger.info({ userId: row.id, reason }, 'account deleted');
  }

  /** exportData: everything held about the session's user. */
  async exportData(session: Session): Promise<DataExport> {
    const { user, sessions, sessionKeyHeld } = await this.deps.users.holdings(session.openid);
    return {
      user,
      sessions,
      session_key_held: sessionKeyHeld,
      avatar_stored_here: this.ownAvatarKey(user.user_id, user.avatar) !== null,
    };
  }

  /**
   * Clears profile fields ("" each) through update's fenced path, and removes the uploaded
   * avatar file when the avatar is cleared. A field already "" is not written again, so a
   * repeated push changes nothing more (not even mtime). No such user: nothing to do.
   */
  async clearFields(openid: string, fields: readonly ClearableField[]): Promise<void> {
    const { users, media, logger } = this.deps;
    let user: User;
    try {
      user = JSON.parse(await users.get(openid)) as User;
    } catch (err) {
      if (err instanceof ServiceError && err.kind === 'notFound') return;
      throw err;
    }
    const patch: Partial<Record<ClearableField, string>> = {};
    for (const field of fields) if (user[field] !== '') patch[field] = '';
    if (Object.keys(patch).length === 0) return;
    await users.update(user.user_id, patch);
    const file = patch.avatar === '' ? this.ownAvatarKey(user.user_id, user.avatar) : null;
    if (file) {
      // The profile no longer names it; a file left behind is only disk, and is logged.
      await media.remove(file).catch((err: Error) => logger.warn({ err: err.message }, 'revoked avatar not removed'));
    }
  }

  /**
   * An avatar WeChat's content check refused (push-events.ts, wxa_media_check): cleared to ""
   * through update's fenced path only while the locked row still holds it, so an upload landing
   * meanwhile is never the one cleared; the cleared file goes with update's release of a
   * replaced avatar. Once replaced, only its file is removed, if it is one of the user's own and
   * still there. A repeated verdict finds nothing left to do.
   */
  async withdrawAvatar(userId: number, url: string): Promise<void> {
    const { users, media, logger } = this.deps;
    if (await users.update(userId, { avatar: '' }, { avatar: url })) return;
    const file = this.ownAvatarKey(userId, url);
    if (file) {
      await media.remove(file).catch((err: Error) => logger.warn({ err: err.message }, 'refused avatar not removed'));
    }
  }

  private async removeAvatarFiles(userId: number, avatar: string | undefined): Promise<void> {
    const { media } = this.deps;
    await media.removeByPrefix(avatarPrefix(userId));
    const own = avatar === undefined ? null : this.ownAvatarKey(userId, avatar);
    if (own) await media.remove(own);
  }

  /** The media key of an avatar URL when it is a file of this user's own (update may name anything). */
  private ownAvatarKey(userId: number, avatar: string): string | null {
    const key = this.deps.media.keyOf(avatar);
    return key && key.startsWith(avatarPrefix(userId)) ? key : null;
  }
}
