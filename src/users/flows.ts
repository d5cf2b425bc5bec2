import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Logger } from '../logger';
import { IMAGE_TYPES, inspectAvatar, renderAvatar } from '../media/image';
import type { MediaStore } from '../media/store';
import { Slots } from '../media/slots';
import { readUpload, UploadGate } from '../media/upload';
import type { Session } from '../sessions/store';
import type { PhoneNumberApi } from '../wechat/phone-number';
import type { ContentCheck } from './content';
import type { DateFormatter, User } from './model';
import type { UserService } from './service';
import type { Config } from '../config';

export interface ProfileFlowDeps {
  users: Pick<UserService, 'get' | 'update'>;
  phones: Pick<PhoneNumberApi, 'phoneNumber'>;
  media: MediaStore;
  /** The upload bounds of config.media (docs/limits.md). */
  limits: Pick<
    Config['media'],
    | 'avatarMaxBytes'
    | 'uploadsMax'
    | 'uploadsPerUser'
    | 'uploadsPerUserPerMinute'
    | 'uploadMinBytesPerSecond'
    | 'decodeMaxBytes'
  >;
  /** The stored avatar URL of each of these users that exists. */
  avatarsOf(userIds: number[]): Promise<Map<number, string>>;
  /** YYYY-MM-DD HH:mm:ss in TIME_ZONE: the avatar file's time stamp. */
  formatDate: DateFormatter;
  logger: Logger;
  /** WeChat's check of the stored avatar; its verdict comes later, by the message push. */
  content?: Pick<ContentCheck, 'checkAvatar'>;
}

/** An upload's body is judged over this window: below the minimum rate for it, it is cut. */
const RATE_WINDOW_MS = 5000;
/**
 * Images decoded at once per process: one. Decoding is CPU-bound and libvips already has a
 * thread per core; one at a time keeps a process's peak at one decode budget above its base
 * (two at once measured 195 MB RSS at the default budget, one 150-180 MB).
 */
const DECODES = 1;
/** avatar/<user_id>_<YYYYMMDDHHmmss>[_<hex>].<ext>: the user a stored avatar belongs to. */
const AVATAR_OWNER = /^avatar\/(\d{1,16})_\d{14}(?:_[0-9a-f]{12})?\.[a-z]+$/;

/**
 * WeChat's own ways of giving a profile its phone number (getPhoneNumber's code) and avatar
 * (chooseAvatar's file), for the user of a session. Both end in UserService.update, so the
 * cache is invalidated exactly as an update's, and both answer the user as read afterwards.
 */
export class ProfileFlows {
  /** Uploads read or worked on at once: the bound on every cost an upload has. */
  readonly uploads: UploadGate;
  /** Images decoded at once; the rest of the uploads (never more) wait, one per user at most. */
  private readonly decodes: Slots;

  constructor(private readonly deps: ProfileFlowDeps) {
    const { uploadsMax, uploadsPerUser, uploadsPerUserPerMinute } = deps.limits;
    this.uploads = new UploadGate(uploadsMax, uploadsPerUser, uploadsPerUserPerMinute);
    this.decodes = new Slots(DECODES, deps.limits.uploadsMax, 'avatar uploads');
  }

  /** AVATAR_MAX_BYTES: the largest avatar file accepted. */
  get avatarMaxBytes(): number {
    return this.deps.limits.avatarMaxBytes;
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

  /**
   * The session's user, with the uploaded image as its avatar. An upload slot of the user is
   * taken before a byte of the body is read (or refused: 429 for the user's, 503 for the
   * process's), then `admitted` is called (the request leaves the JSON routes' load shedder:
   * its client's pace is now the upload bounds' business). The avatar it replaces is released
   * by the update (releaseAvatar).
   */
  async setAvatar(session: Session, req: IncomingMessage, admitted: () => void = () => undefined): Promise<string> {
    const { users, media, limits } = this.deps;
    const leave = this.uploads.enter(session.openid);
    // A caller that has gone is not worth a decode: its place in the queue goes to the next.
    const gone = new AbortController();
    const socket = req.socket;
    const onClose = () => gone.abort();
    socket.once('close', onClose);
    try {
      admitted();
      const user = await this.current(session);
      const upload = await readUpload(req, {
        maxFileBytes: limits.avatarMaxBytes,
        field: 'file',
        minBytesPerSecond: limits.uploadMinBytesPerSecond,
        windowMs: RATE_WINDOW_MS,
      });
      const source = await inspectAvatar(upload, limits.decodeMaxBytes);
      const image = await this.decodes.run(() => renderAvatar(source), { key: session.openid, signal: gone.signal });
      const { ext, contentType } = IMAGE_TYPES[image.type];
      const key = await this.storeNew(user.user_id, ext, image.data, contentType);
      try {
        await users.update(user.user_id, { avatar: media.url(key) });
      } catch (err) {
        await media.remove(key).catch(() => undefined);
        throw err;
      }
      this.deps.content?.checkAvatar(user, media.url(key));
      return await users.get(session.openid);
    } finally {
      socket.off('close', onClose);
      leave();
    }
  }

  /**
   * Removes the file of an avatar URL that an update has just replaced, if it is a file of this
   * user's own (an avatar URL set through update may name anything, another user's file
   * included). A failure is left to the sweep.
   */
  async releaseAvatar(userId: number, replaced: string): Promise<void> {
    const key = this.deps.media.keyOf(replaced);
    if (!key || AVATAR_OWNER.exec(key)?.[1] !== String(userId)) return;
    await this.deps.media
      .remove(key)
      .catch((err: Error) =>
        this.deps.logger.warn({ err: err.message }, 'replaced avatar not removed; the sweep will'),
      );
  }

  /** Which of these avatar keys their owner's row still names (the sweep's question). */
  async referencedAvatars(keys: string[]): Promise<Set<string>> {
    const owners = new Map<string, number>();
    for (const key of keys) {
      const owner = AVATAR_OWNER.exec(key)?.[1];
      if (owner) owners.set(key, Number(owner));
    }
    const avatars = await this.deps.avatarsOf([...new Set(owners.values())]);
    // By key, whatever the URL base was when it was stored (PUBLIC_BASE_URL may have changed).
    // A key that is not an avatar's name is kept: this sweep does not know what it is.
    return new Set(keys.filter((key) => !owners.has(key) || avatars.get(owners.get(key)!)?.endsWith(`/media/${key}`)));
  }

  private async current(session: Session): Promise<User> {
    return JSON.parse(await this.deps.users.get(session.openid)) as User;
  }

  /**
   * avatar/<user_id>_<YYYYMMDDHHmmss>_<12 hex>.<ext>: the document's URL shape, then 48 random
   * bits, so a name is never given twice (not even after its file was removed) and a URL never
   * changes what it shows: it can be cached for good.
   */
  private async storeNew(userId: number, ext: string, data: Buffer, contentType: string): Promise<string> {
    const stamp = this.deps.formatDate(new Date()).replace(/\D/g, '');
    for (let attempt = 0; attempt < 4; attempt++) {
      const key = `avatar/${userId}_${stamp}_${randomBytes(6).toString('hex')}.${ext}`;
      if (await this.deps.media.create(key, data, contentType)) return key;
    }
    throw new Error(`no free avatar name for user ${userId}`);
  }
}
