import type { Logger } from '../logger';
import type { MediaStore } from './store';

export interface SweepOptions {
  /** The folder swept (avatar). */
  folder: string;
  /** MEDIA_SWEEP_INTERVAL_MS: a pass every this often; 0: never. */
  intervalMs: number;
  /** MEDIA_SWEEP_BATCH: files looked at in one pass, at most. */
  batch: number;
  /**
   * A file younger than this is never removed: it may be an upload between its write and the
   * update that stores its URL (seconds at most), on this instance or another sharing the disk.
   */
  graceMs: number;
  /** Which of these keys a stored row still names (asked of MySQL): the others are orphans. */
  referenced(keys: string[]): Promise<Set<string>>;
}

/**
 * Removes media no user references: left by a crash between writing a file and storing its URL,
 * or by a removal that failed. (Replaced avatars are removed at once, by the update that replaced
 * them: see UserService's onAvatarReplaced.) Safe with several instances on one MEDIA_DIR: a
 * file is removed only once it is older than the grace and MySQL, asked after, names it
 * nowhere; a removal two instances both decide on is idempotent.
 */
export class MediaSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly store: Pick<MediaStore, 'page' | 'remove'>,
    private readonly options: SweepOptions,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (!this.options.intervalMs || this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return; // a slow pass is never overlapped by the next
      this.running = this.pass()
        .catch((err: Error) => this.logger.warn({ err: err.message }, 'media sweep failed; retried next interval'))
        .finally(() => (this.running = undefined));
    }, this.options.intervalMs).unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass: at most `batch` files looked at, one MySQL lookup per 100 of them. */
  async pass(now = Date.now()): Promise<{ looked: number; removed: number; wrapped: boolean }> {
    const { folder, batch, graceMs, referenced } = this.options;
    const { keys, wrapped } = await this.store.page(folder, batch, now - graceMs);
    if (!keys.length) return { looked: 0, removed: 0, wrapped };
    const kept = await referenced(keys);
    let removed = 0;
    for (const key of keys) {
      if (kept.has(key)) continue;
      await this.store.remove(key);
      removed += 1;
    }
    if (removed) this.logger.info({ removed, looked: keys.length }, 'media sweep removed unreferenced files');
    return { looked: keys.length, removed, wrapped };
  }
}
