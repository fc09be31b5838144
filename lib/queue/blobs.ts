/**
 * Blob stores: where input images and results live while their job needs them, each with a TTL, so a job
 * carries a reference instead of pixels. Two kinds, chosen alike on the server and every worker:
 * - RedisBlobStore (default): binary Redis keys with an expiry (PX); one size limit per blob.
 * - DirBlobStore (`--blob-dir`): files in a shared directory (a volume every machine mounts); the expiry
 *   is the file's modification time, and sweep() deletes expired files.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { XpsrError } from '../errors.js';
import { ERR_BLOB_TOO_LARGE, type BlobRef, type QueueKeys } from './protocol.js';

export interface BlobStore {
  readonly kind: BlobRef['store'];
  /**
   * Stores `data` under `name` for `ttlMs`. With `ifAbsent`, an existing blob is kept and the call
   * returns false (the idempotent result write: the first attempt that finishes wins).
   */
  put(name: string, data: Buffer, ttlMs: number, options?: { ifAbsent?: boolean }): Promise<boolean>;
  /** The bytes, or undefined when the blob never existed or has expired. */
  get(name: string): Promise<Buffer | undefined>;
  delete(name: string): Promise<void>;
  /** Deletes expired blobs and returns how many (Redis expires its keys itself: always 0). */
  sweep(): Promise<number>;
}

export const DEFAULT_MAX_BLOB_BYTES = 64 * 2 ** 20;

function tooLarge(name: string, bytes: number, limit: number): XpsrError {
  return new XpsrError(
    ERR_BLOB_TOO_LARGE,
    `the image ${name.startsWith('out:') ? 'result' : 'input'} is ${bytes} bytes, above the ` +
      `Redis blob limit of ${limit} bytes (raise --max-blob-mb, or use a shared --blob-dir for large images)`,
    { bytes, limit },
  );
}

export class RedisBlobStore implements BlobStore {
  readonly kind = 'redis' as const;

  constructor(
    private readonly redis: Redis,
    private readonly keys: QueueKeys,
    readonly maxBytes = DEFAULT_MAX_BLOB_BYTES,
  ) {}

  async put(name: string, data: Buffer, ttlMs: number, { ifAbsent = false } = {}): Promise<boolean> {
    if (data.length > this.maxBytes) throw tooLarge(name, data.length, this.maxBytes);
    const ttl = Math.max(1, Math.ceil(ttlMs));
    const r = ifAbsent
      ? await this.redis.set(this.keys.blob(name), data, 'PX', ttl, 'NX')
      : await this.redis.set(this.keys.blob(name), data, 'PX', ttl);
    return r === 'OK';
  }

  async get(name: string): Promise<Buffer | undefined> {
    return (await this.redis.getBuffer(this.keys.blob(name))) ?? undefined;
  }

  async delete(name: string): Promise<void> {
    await this.redis.del(this.keys.blob(name));
  }

  async sweep(): Promise<number> {
    return 0;
  }
}

/** Temporary files older than this are leftovers of a writer that died mid-write. */
const STALE_TMP_MS = 3600_000;

export class DirBlobStore implements BlobStore {
  readonly kind = 'dir' as const;
  /** `<dir>/<queue>`: several queues can share one volume. */
  readonly dir: string;

  constructor(root: string, keys: QueueKeys) {
    this.dir = path.join(path.resolve(root), keys.queue);
    mkdirSync(this.dir, { recursive: true });
  }

  #file(name: string): string {
    // Names are `in:<uuid>` / `out:<uuid>`; ':' is not portable to every shared file system.
    if (!/^[\w:.-]{1,200}$/.test(name)) throw new XpsrError('ERR_INVALID_ARGUMENT', `bad blob name '${name.slice(0, 64)}'`);
    return path.join(this.dir, `${name.replace(/:/g, '_')}.blob`);
  }

  async put(name: string, data: Buffer, ttlMs: number, { ifAbsent = false } = {}): Promise<boolean> {
    const file = this.#file(name);
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    await fs.writeFile(tmp, data);
    const expires = new Date(Date.now() + Math.max(1, ttlMs));
    await fs.utimes(tmp, expires, expires); // the expiry is the modification time
    try {
      if (!ifAbsent) {
        await fs.rename(tmp, file); // atomic: readers see the old or the new file, never half of one
        return true;
      }
      try {
        await fs.link(tmp, file); // atomic create-if-absent
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        if ((await this.get(name)) !== undefined) return false;
        await fs.rename(tmp, file); // the existing one had expired
        return true;
      }
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  async get(name: string): Promise<Buffer | undefined> {
    const file = this.#file(name);
    try {
      const st = await fs.stat(file);
      if (st.mtimeMs <= Date.now()) {
        await fs.rm(file, { force: true });
        return undefined;
      }
      return await fs.readFile(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async delete(name: string): Promise<void> {
    await fs.rm(this.#file(name), { force: true });
  }

  async sweep(): Promise<number> {
    let removed = 0;
    const now = Date.now();
    for (const entry of await fs.readdir(this.dir)) {
      const file = path.join(this.dir, entry);
      try {
        const st = await fs.stat(file);
        const expired = entry.endsWith('.tmp') ? st.ctimeMs < now - STALE_TMP_MS : entry.endsWith('.blob') && st.mtimeMs <= now;
        if (expired) {
          await fs.rm(file, { force: true });
          removed++;
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // removed meanwhile by another process
      }
    }
    return removed;
  }
}

export interface BlobStoreOptions {
  /** A shared directory instead of Redis keys. */
  blobDir?: string;
  /** Largest blob in the Redis store (default 64 MiB). */
  maxBlobBytes?: number;
}

export function createBlobStore(redis: Redis, keys: QueueKeys, o: BlobStoreOptions): BlobStore {
  return o.blobDir ? new DirBlobStore(o.blobDir, keys) : new RedisBlobStore(redis, keys, o.maxBlobBytes ?? DEFAULT_MAX_BLOB_BYTES);
}
