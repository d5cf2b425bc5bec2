import type { IncomingMessage } from 'node:http';
import type { Logger } from '../logger';
import { IMAGE_TYPES, processAvatar } from '../media/image';
import type { MediaStore } from '../media/store';
import { Slots } from '../media/slots';
import { readUpload } from '../media/upload';
import type { Session } from '../sessions/store';
import type { PhoneNumberApi } from '../wechat/phone-number';
import type { ContentCheck } from './content';
import type { DateFormatter, User } from './model';
import type { UserService } from './service';

export interface ProfileFlowDeps {
  users: Pick<UserService, 'get' | 'update'>;
  phones: Pick<PhoneNumberApi, 'phoneNumber'>;
  media: MediaStore;
  avatarMaxBytes: number;
  /** YYYY-MM-DD HH:mm:ss in TIME_ZONE: the avatar file's time stamp. */
  formatDate: DateFormatter;
  logger: Logger;
  /** WeChat's check of the stored avatar; its verdict comes later, by the message push. */
  content?: Pick<ContentCheck, 'checkAvatar'>;
}

/** How many later seconds a name is tried in when uploads of one user collide. */
const NAME_ATTEMPTS = 60;

/**
 * WeChat's own ways of giving a profile its phone number (getPhoneNumber's code) and avatar
 * (chooseAvatar's file), for the user of a session. Both end in UserService.update, so the
 * cache is invalidated exactly as an update's, and both answer the user as read afterwards.
 */
export class ProfileFlows {
  /** Images decoded at once per process, and waiting for it; more uploads are refused (-3). */
  private readonly imageSlots = new Slots(2, 16, 'avatar uploads');

  constructor(private readonly deps: ProfileFlowDeps) {}

  /** AVATAR_MAX_BYTES: the largest avatar file accepted. */
  get avatarMaxBytes(): number {
    return this.deps.avatarMaxBytes;
  }

  /** The session's user, with the phone number WeChat gives for `code`. */
  async bindPhone(session: Session, code: string): Promise<string> {
    const { users, phones } = this.deps;
    // Before WeChat is asked: a code works once, and a successful call is billed.
    const user = await this.current(session);
    const phone = await phones.phoneNumber(code, session.openid);
    await users.update(user.user_id, { phone });
    return users.get(session.openid);
  }

  /** The session's user, with the uploaded image as its avatar; the one it replaces is removed. */
  async setAvatar(session: Session, req: IncomingMessage): Promise<string> {
    const { users, media, avatarMaxBytes, logger } = this.deps;
    const user = await this.current(session);
    const upload = await readUpload(req, { maxFileBytes: avatarMaxBytes, field: 'file' });
    const image = await this.imageSlots.run(() => processAvatar(upload));
    const { ext, contentType } = IMAGE_TYPES[image.type];
    const key = await this.storeNew(user.user_id, ext, image.data, contentType);
    try {
      await users.update(user.user_id, { avatar: media.url(key) });
    } catch (err) {
      await media.remove(key).catch(() => undefined);
      throw err;
    }
    this.deps.content?.checkAvatar(user, media.url(key));
    // Only a file of this user's own: an avatar URL set through update may name anything.
    const old = media.keyOf(user.avatar);
    if (old && old !== key && old.startsWith(`avatar/${user.user_id}_`)) {
      await media.remove(old).catch((err: Error) => logger.warn({ err: err.message }, 'old avatar not removed'));
    }
    return users.get(session.openid);
  }

  private async current(session: Session): Promise<User> {
    return JSON.parse(await this.deps.users.get(session.openid)) as User;
  }

  /**
   * avatar/<user_id>_<YYYYMMDDHHmmss>.<ext>, the document's URL shape. Two uploads in one
   * second take the next free second: each upload gets its own name, so a URL never changes
   * what it shows and can be cached for good.
   */
  private async storeNew(userId: number, ext: string, data: Buffer, contentType: string): Promise<string> {
    const now = Date.now();
    for (let i = 0; i < NAME_ATTEMPTS; i++) {
      const stamp = this.deps.formatDate(new Date(now + i * 1000)).replace(/\D/g, '');
      const key = `avatar/${userId}_${stamp}.${ext}`;
      if (await this.deps.media.create(key, data, contentType)) return key;
    }
    throw new Error(`no free avatar name for user ${userId} in ${NAME_ATTEMPTS} s`);
  }
}
