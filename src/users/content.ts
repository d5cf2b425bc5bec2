import { createHash } from 'node:crypto';
import { ServiceError } from '../errors';
import type { Logger } from '../logger';
import type { RedisBreaker } from '../redis/breaker';
import type { RedisClient } from '../redis/client';
import type { KeyLayout } from '../redis/keys';
import type { PushMessage } from '../wechat/push/message';
import { isSuggest, type SecurityApi, type Suggest } from '../wechat/security';

export interface ContentSettings {
  /** CONTENT_CHECK, settled: auto is on when WECHAT_APPID is set. */
  enabled: boolean;
  /** CONTENT_REVIEW: what WeChat's `review` means here. */
  review: 'accept' | 'refuse';
  /** CONTENT_CHECK_FAILURE: what a nickname gets when WeChat cannot say (open: stored). */
  failure: 'open' | 'closed';
  cacheTtlSeconds: number;
}

/** What /metrics counts: each check by kind and verdict (error: WeChat gave none). */
export type CheckKind = 'text' | 'image';
export type CheckVerdict = Suggest | 'error';

export interface ContentCheckDeps {
  api: Pick<SecurityApi, 'msgSecCheck' | 'mediaCheckAsync'>;
  redis: RedisClient;
  keys: Pick<KeyLayout, 'contentVerdict' | 'mediaCheck'>;
  breaker: RedisBreaker;
  settings: ContentSettings;
  logger: Logger;
  count?(kind: CheckKind, verdict: CheckVerdict): void;
}

/** Whose avatar a mediaCheckAsync trace is about. */
export interface MediaTrace {
  user_id: number;
  openid: string;
  url: string;
}

// WeChat's verdict on an image comes within 30 minutes; the trace outlives it with room to spare.
const TRACE_TTL_SECONDS = 3600;
const TRACE_ID = /^[A-Za-z0-9_-]{1,128}$/;

export const CONTENT_REFUSED_MESSAGE = "内容安全检测未通过 / refused by WeChat's content check";

const refused = () => new ServiceError('contentRefused', CONTENT_REFUSED_MESSAGE);

/**
 * WeChat's content check of what users publish here: nicknames (msgSecCheck, before they are
 * stored) and avatars (mediaCheckAsync, after; the verdict comes by the message push). Every
 * verdict on a text is cached by the text's SHA-256, so a nickname already judged costs no
 * call, and WeChat's daily quota is spent once per distinct nickname. Text never goes into a
 * log line: a refused nickname may be abuse, but it is also the user's.
 */
export class ContentCheck {
  constructor(private readonly deps: ContentCheckDeps) {}

  get enabled(): boolean {
    return this.deps.settings.enabled;
  }

  /** Refuses (-11) a nickname WeChat calls risky (or review, under CONTENT_REVIEW=refuse). */
  async checkNickname(text: string, openid: string): Promise<void> {
    const { settings, logger } = this.deps;
    if (!settings.enabled) return;
    const key = this.deps.keys.contentVerdict(createHash('sha256').update(text, 'utf8').digest('hex'));
    let suggest = await this.cached(key);
    if (!suggest) {
      try {
        suggest = await this.deps.api.msgSecCheck(text, openid);
      } catch (err) {
        this.deps.count?.('text', 'error');
        if (settings.failure === 'closed') {
          throw new ServiceError('upstream', "WeChat's content check is unavailable, try again", { cause: err });
        }
        logger.warn({ err: (err as Error)?.message }, 'content check failed: nickname stored unchecked');
        return;
      }
      await this.remember(key, suggest);
    }
    this.deps.count?.('text', suggest);
    if (suggest === 'risky' || (suggest === 'review' && settings.review === 'refuse')) throw refused();
  }

  /**
   * Asks WeChat to check an avatar now stored at a public URL, and keeps the trace_id with whose
   * it is. Never waits and never fails the caller: the verdict comes later (verdictOf).
   */
  checkAvatar(user: { user_id: number; openid: string }, url: string): void {
    if (!this.deps.settings.enabled || !url) return;
    void this.submit({ user_id: user.user_id, openid: user.openid, url });
  }

  private async submit(trace: MediaTrace): Promise<void> {
    const { api, redis, keys, breaker, logger } = this.deps;
    try {
      const traceId = await api.mediaCheckAsync(trace.url, trace.openid);
      await breaker.run(() => redis.set(keys.mediaCheck(traceId), JSON.stringify(trace), 'EX', TRACE_TTL_SECONDS));
    } catch (err) {
      this.deps.count?.('image', 'error');
      logger.warn({ err: (err as Error)?.message, userId: trace.user_id }, 'avatar not submitted to the content check');
    }
  }

  /**
   * A wxa_media_check push: the avatar to withdraw when WeChat calls it risky (or review, under
   * CONTENT_REVIEW=refuse), or null. The trace is kept until it expires, so a repeated push
   * answers the same and its effect, already done, changes nothing more.
   */
  async verdictOf(message: PushMessage): Promise<MediaTrace | null> {
    const { redis, keys, breaker, logger, settings } = this.deps;
    const traceId = message.trace_id ?? '';
    if (!TRACE_ID.test(traceId)) throw new ServiceError('invalid', 'wxa_media_check without a valid trace_id');
    let stored: string | null;
    try {
      stored = await breaker.run(() => redis.get(keys.mediaCheck(traceId)));
    } catch (err) {
      // WeChat repeats a push not answered `success`: a later one finds Redis back.
      throw new ServiceError('unavailable', 'the cache is unavailable, try again', { cause: err });
    }
    if (!stored) {
      logger.warn({ traceId }, 'media check verdict for an unknown trace_id (expired, or not ours)');
      return null;
    }
    const trace = JSON.parse(stored) as MediaTrace;
    const suggest = message['result.suggest'];
    const errcode = message.errcode ?? '0';
    if (errcode !== '0' || !isSuggest(suggest)) {
      this.deps.count?.('image', 'error');
      logger.warn({ traceId, errcode: errcode.slice(0, 16), userId: trace.user_id }, 'media check gave no verdict');
      return null;
    }
    this.deps.count?.('image', suggest);
    if (suggest === 'risky' || (suggest === 'review' && settings.review === 'refuse')) {
      logger.info({ traceId, userId: trace.user_id, suggest }, 'avatar refused by the content check');
      return trace;
    }
    return null;
  }

  /** A verdict from the cache, or null: a Redis failure costs a call, never a refusal. */
  private async cached(key: string): Promise<Suggest | null> {
    try {
      const value = await this.deps.breaker.run(() => this.deps.redis.get(key));
      return isSuggest(value) ? value : null;
    } catch {
      return null;
    }
  }

  private async remember(key: string, suggest: Suggest): Promise<void> {
    const ttl = this.deps.settings.cacheTtlSeconds;
    await this.deps.breaker.run(() => this.deps.redis.set(key, suggest, 'EX', ttl)).catch(() => undefined);
  }
}
