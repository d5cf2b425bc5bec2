import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Dir } from 'node:fs';
import { lstat, link, mkdir, open, opendir, readdir, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';

export interface StoredObject {
  body: Readable;
  size: number;
}

/**
 * Where uploaded media lives, by key (`avatar/1_20200401184953.jpg`). The disk is one
 * implementation; an object store (its bucket behind its own URL base) is another: the
 * avatar flow only uses this interface.
 */
export interface MediaStore {
  /** Stores `data` under `key` unless something is there already: false then, nothing written. */
  create(key: string, data: Buffer, contentType: string): Promise<boolean>;
  /** The object, or null when there is none. */
  open(key: string): Promise<StoredObject | null>;
  /** Idempotent. */
  remove(key: string): Promise<void>;
  /**
   * Removes every object whose key starts with `prefix` (`avatar/42_`: a user's avatars), and
   * answers how many there were. Idempotent.
   */
  removeByPrefix(prefix: string): Promise<number>;
  /** The URL clients fetch `key` from. */
  url(key: string): string;
  /** The key of a URL this store handed out, or null for any other URL. */
  keyOf(url: string): string | null;
  /**
   * The next `limit` keys of `folder` last written before `before` (ms since the epoch), in no
   * order, resuming where the last call stopped and starting over once all were seen; `wrapped`
   * says the last call reached the end. Leftovers of writes that never finished (a crash)
   * older than that are removed on the way. For the orphan sweep (media/sweep.ts).
   */
  page(folder: string, limit: number, before: number): Promise<{ keys: string[]; wrapped: boolean }>;
}

/** A file being written; one left behind by a crash is removed by the sweep (page). */
const TEMP_PREFIX = '.tmp-';

/** Keys are a folder and a file name of safe characters: nothing can climb out of the root. */
const KEY = /^[a-z]+\/[A-Za-z0-9_-]{1,100}\.[a-z0-9]{1,5}$/;

export function checkKey(key: string): string {
  if (!KEY.test(key)) throw new Error(`not a media key: ${JSON.stringify(key).slice(0, 80)}`);
  return key;
}

/**
 * Files under MEDIA_DIR, served by this service at PUBLIC_BASE_URL/media/<key>. Several
 * instances share it through a shared volume. A file appears whole or not at all: it is written
 * under a temporary name and then hard-linked to its key, which fails if the key exists (so two
 * processes can never write one name).
 */
export class DiskMediaStore implements MediaStore {
  private readonly root: string;
  private readonly urlBase: string;

  constructor(root: string, publicBaseUrl: string) {
    this.root = resolve(root);
    this.urlBase = `${publicBaseUrl.replace(/\/+$/, '')}/media/`;
  }

  async create(key: string, data: Buffer): Promise<boolean> {
    const path = this.path(key);
    await mkdir(dirname(path), { recursive: true });
    const temp = join(dirname(path), `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    await writeFile(temp, data, { flag: 'wx' });
    try {
      await link(temp, path);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }

  async open(key: string): Promise<StoredObject | null> {
    let handle;
    try {
      handle = await open(this.path(key), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) {
        await handle.close();
        return null;
      }
      return { body: createReadStream('', { fd: handle, autoClose: true }), size: stat.size };
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async remove(key: string): Promise<void> {
    await unlink(this.path(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  async removeByPrefix(prefix: string): Promise<number> {
    const slash = prefix.indexOf('/');
    const folder = prefix.slice(0, slash);
    const start = prefix.slice(slash + 1);
    if (slash < 1 || !/^[a-z]+$/.test(folder) || !/^[A-Za-z0-9_-]+$/.test(start)) {
      throw new Error(`not a media key prefix: ${JSON.stringify(prefix).slice(0, 80)}`);
    }
    let names: string[];
    try {
      names = await readdir(join(this.root, folder));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    const keys = names.map((name) => `${folder}/${name}`).filter((key) => key.startsWith(prefix) && KEY.test(key));
    await Promise.all(keys.map((key) => this.remove(key)));
    return keys.length;
  }

  url(key: string): string {
    return this.urlBase + checkKey(key);
  }

  keyOf(url: string): string | null {
    if (!url.startsWith(this.urlBase)) return null;
    const key = url.slice(this.urlBase.length);
    return KEY.test(key) ? key : null;
  }

  private cursor: { folder: string; dir: Dir } | undefined;

  async page(folder: string, limit: number, before: number): Promise<{ keys: string[]; wrapped: boolean }> {
    if (this.cursor?.folder !== folder) {
      await this.cursor?.dir.close().catch(() => undefined);
      this.cursor = undefined;
      try {
        this.cursor = { folder, dir: await opendir(join(this.root, folder), { bufferSize: 64 }) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { keys: [], wrapped: true };
        throw err;
      }
    }
    const { dir } = this.cursor;
    const keys: string[] = [];
    for (let seen = 0; seen < limit; seen++) {
      const entry = await dir.read();
      if (!entry) {
        this.cursor = undefined;
        await dir.close().catch(() => undefined);
        return { keys, wrapped: true };
      }
      if (!entry.isFile()) continue;
      const path = join(this.root, folder, entry.name);
      const stat = await lstat(path).catch(() => null);
      if (!stat || stat.mtimeMs >= before) continue;
      const key = `${folder}/${entry.name}`;
      if (KEY.test(key)) keys.push(key);
      else if (entry.name.startsWith(TEMP_PREFIX)) await unlink(path).catch(() => undefined);
    }
    return { keys, wrapped: false };
  }

  private path(key: string): string {
    return join(this.root, checkKey(key));
  }
}
