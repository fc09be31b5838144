// Caption cache keyed by image content hash + captioner identity (model files, prompt format, settings) +
// instruction + generation options; in memory (LRU) and optionally on disk (one small JSON file per
// answer), so re-running a folder or a benchmark does not caption again.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

import { throwIfAborted } from './errors.js';
import { prepareImage } from './image.js';
import type { CaptionImage, CaptionOptions, Captioner } from './types.js';

// 2: images hashed by their decoded pixels (lib/image), not their file bytes
const KEY_VERSION = 2;

export interface CaptionCacheOptions {
  /** Folder of the on-disk cache (created on first write); memory only when absent. */
  dir?: string;
  /** Entries kept in memory (default 10000). */
  maxEntries?: number;
}

export interface CaptionCacheEntry {
  caption: string;
  captioner: string;
  instruction: string;
  image: string;
  created: string;
}

export class CaptionCache {
  readonly dir?: string;
  readonly #max: number;
  readonly #mem = new Map<string, string>();
  hits = 0;
  misses = 0;

  constructor(options: CaptionCacheOptions = {}) {
    this.dir = options.dir ? path.resolve(options.dir) : undefined;
    this.#max = options.maxEntries ?? 10_000;
  }

  static key(parts: { captioner: string; image: string; instruction: string; generation: Record<string, unknown> }): string {
    const gen = Object.fromEntries(
      Object.entries(parts.generation)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => a.localeCompare(b)),
    );
    return createHash('sha256')
      .update(JSON.stringify([KEY_VERSION, parts.captioner, parts.image, parts.instruction, gen]))
      .digest('hex');
  }

  #file(key: string): string {
    return path.join(this.dir!, key.slice(0, 2), `${key}.json`);
  }

  async get(key: string): Promise<string | undefined> {
    const m = this.#mem.get(key);
    if (m !== undefined) {
      this.#mem.delete(key);
      this.#mem.set(key, m);
      this.hits++;
      return m;
    }
    if (this.dir) {
      try {
        const e = JSON.parse(await fs.readFile(this.#file(key), 'utf8')) as CaptionCacheEntry;
        if (typeof e.caption === 'string') {
          this.#remember(key, e.caption);
          this.hits++;
          return e.caption;
        }
      } catch {
        /* missing or corrupt: a miss */
      }
    }
    this.misses++;
    return undefined;
  }

  async set(key: string, entry: CaptionCacheEntry): Promise<void> {
    this.#remember(key, entry.caption);
    if (!this.dir) return;
    const file = this.#file(key);
    await fs.mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(entry) + '\n');
    await fs.rename(tmp, file);
  }

  #remember(key: string, caption: string): void {
    this.#mem.delete(key);
    this.#mem.set(key, caption);
    while (this.#mem.size > this.#max) {
      const oldest = this.#mem.keys().next().value as string;
      this.#mem.delete(oldest);
    }
  }

  /** Forgets the in-memory entries (the disk cache stays). */
  clearMemory(): void {
    this.#mem.clear();
  }
}

/** Wraps a captioner: answers found in the cache are not generated again. */
export class CachingCaptioner implements Captioner {
  readonly kind = 'cache';
  readonly cacheable = false;
  readonly inner: Captioner;
  readonly cache: CaptionCache;

  constructor(inner: Captioner, cache: CaptionCache | CaptionCacheOptions = {}) {
    this.inner = inner;
    this.cache = cache instanceof CaptionCache ? cache : new CaptionCache(cache);
  }

  get id(): string {
    return this.inner.id;
  }

  async caption(image: CaptionImage, instructions: readonly string[], options: CaptionOptions = {}): Promise<string[]> {
    if (!this.inner.cacheable) return this.inner.caption(image, instructions, options);
    throwIfAborted(options.signal);
    const img = await prepareImage(image, options.name);
    const imageHash = img.contentHash();
    const generation = { maxTokens: options.maxTokens, temperature: options.temperature, topK: options.topK, topP: options.topP, seed: options.seed };
    const keys = instructions.map((instruction) => CaptionCache.key({ captioner: this.inner.id, image: imageHash, instruction, generation }));
    const out: Array<string | undefined> = await Promise.all(keys.map((k) => this.cache.get(k)));
    const missing = out.map((v, i) => (v === undefined ? i : -1)).filter((i) => i >= 0);
    if (missing.length > 0) {
      // the decoded image is passed on: decoded once
      const answers = await this.inner.caption(
        img,
        missing.map((i) => instructions[i]!),
        { ...options, name: img.source.name },
      );
      const created = new Date().toISOString();
      await Promise.all(
        missing.map(async (i, k) => {
          const caption = answers[k] ?? '';
          out[i] = caption;
          await this.cache.set(keys[i]!, { caption, captioner: this.inner.id, instruction: instructions[i]!, image: imageHash, created });
        }),
      );
    }
    return out as string[];
  }

  async dispose(): Promise<void> {
    await this.inner.dispose();
  }
}
