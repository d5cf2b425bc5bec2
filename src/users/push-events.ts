import { ServiceError } from '../errors';
import type { Logger } from '../logger';
import type { PushHandler } from '../wechat/push/receiver';
import type { PushMessage } from '../wechat/push/message';
import { isOpenid } from '../wechat/openid';
import type { ContentCheck } from './content';
import type { AccountRights, ClearableField } from './rights';

/** What an event does; resolves once the change is done. */
export type PushEffect = (message: PushMessage) => Promise<void>;

/**
 * An effect on the user the message names in OpenID (FromUserName holds it too); a message
 * without a valid one is refused (400).
 */
const forUser =
  (event: string, effect: (openid: string, message: PushMessage) => Promise<void>): PushEffect =>
  (message) => {
    const openid = message.OpenID ?? message.FromUserName;
    if (!isOpenid(openid)) throw new ServiceError('invalid', `${event} without a valid OpenID`);
    return effect(openid, message);
  };

/**
 * user_authorization_revoke's RevokeInfo: which authorization the user withdrew, and the fields
 * that held what it had given. Any other value is logged and changes nothing.
 */
const REVOKED: Readonly<Record<string, readonly ClearableField[]>> = {
  '6': ['nick_name', 'avatar'], // nickname and avatar (the old getUserProfile grant)
  '8': ['phone'], // phone number
  '19': ['nick_name'], // the nickname chosen from the nickname keyboard
  '20': ['avatar'], // the avatar chosen from the avatar component
};

/**
 * WeChat's events, keyed by `Event`: the effect of each on the user it names. A new event is
 * one more entry (the content check adds `wxa_media_check`). Every change goes through
 * AccountRights, whose changes are update's fenced path or a deletion fenced as it is, and
 * every effect is idempotent: WeChat repeats a push it saw unanswered.
 */
export function pushEffects(
  rights: AccountRights,
  logger: Logger,
  content?: Pick<ContentCheck, 'verdictOf'>,
): Record<string, PushEffect> {
  return {
    user_authorization_revoke: forUser('user_authorization_revoke', async (openid, message) => {
      const fields = REVOKED[message.RevokeInfo ?? ''];
      if (!fields) {
        logger.info(
          { event: message.Event, revokeInfo: message.RevokeInfo?.slice(0, 16) },
          'revoked authorization not held here',
        );
        return;
      }
      await rights.clearFields(openid, fields);
    }),
    user_info_modified: forUser('user_info_modified', (openid) => rights.clearFields(openid, ['nick_name', 'avatar'])),
    user_authorization_cancellation: forUser('user_authorization_cancellation', (openid) =>
      rights.deleteUser(openid, 'wechat_cancellation'),
    ),
    // The verdict on an avatar sent to mediaCheckAsync names its image by trace_id, not by user.
    wxa_media_check: async (message) => {
      const refused = await content?.verdictOf(message);
      if (refused) await rights.withdrawAvatar(refused.user_id, refused.url);
    },
  };
}

/** The receiver's handler: the event's effect, or an info line for an event nobody handles. */
export function pushDispatcher(effects: Record<string, PushEffect>, logger: Logger): PushHandler {
  return async (message) => {
    const event = message.Event ?? '';
    const effect = Object.hasOwn(effects, event) ? effects[event] : undefined;
    if (!effect) {
      logger.info(
        { msgType: message.MsgType?.slice(0, 32), event: event.slice(0, 64) },
        'wechat push ignored: no effect for it',
      );
      return;
    }
    await effect(message);
    logger.info({ event }, 'wechat push applied');
  };
}
