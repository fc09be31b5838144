// Captions that are not generated: fixed strings (the CLI's --prompt-high / --prompt-low) and sidecar files
// in the official XPSR layout (<root>/highlevel_prompt/<NAME>.txt, <root>/lowlevel_prompt_q/<NAME>.txt).
// Slot i answers instruction i; a slot without a string / file can fall back to another captioner.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

import { XpsrError } from '../errors.js';
import { throwIfAborted } from './errors.js';
import { CaptionPixels } from './image.js';
import { firstLineLeftStripped } from './instructions.js';
import type { CaptionImage, CaptionOptions, Captioner } from './types.js';

/** Official folder names: slot 0 = high-level caption, slot 1 = low-level caption. */
export const XPSR_SIDECAR_DIRS: readonly string[] = Object.freeze(['highlevel_prompt', 'lowlevel_prompt_q']);

async function fallbackFor(
  fallback: Captioner | undefined,
  image: CaptionImage,
  instructions: readonly string[],
  missing: number[],
  options: CaptionOptions,
  what: (i: number) => string,
): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  if (missing.length === 0) return out;
  if (!fallback) throw new XpsrError('ERR_CAPTION_MISSING', what(missing[0]!), { instruction: instructions[missing[0]!] });
  const answers = await fallback.caption(
    image,
    missing.map((i) => instructions[i]!),
    options,
  );
  missing.forEach((i, k) => out.set(i, answers[k] ?? ''));
  return out;
}

export interface FixedCaptionerOptions {
  /** answers[i] answers instruction i; undefined = ask `fallback`. */
  answers: ReadonlyArray<string | undefined>;
  fallback?: Captioner;
}

export class FixedCaptioner implements Captioner {
  readonly kind = 'fixed';
  readonly id: string;
  readonly cacheable: boolean;
  readonly #answers: ReadonlyArray<string | undefined>;
  readonly #fallback?: Captioner;

  constructor(options: FixedCaptionerOptions) {
    if (!options || !Array.isArray(options.answers)) throw new XpsrError('ERR_INVALID_ARGUMENT', 'FixedCaptioner needs `answers`');
    this.#answers = [...options.answers];
    this.#fallback = options.fallback;
    this.cacheable = false;
    this.id =
      `fixed:${createHash('sha256').update(JSON.stringify(this.#answers)).digest('hex').slice(0, 16)}` +
      (options.fallback ? `+${options.fallback.id}` : '');
  }

  async caption(image: CaptionImage, instructions: readonly string[], options: CaptionOptions = {}): Promise<string[]> {
    throwIfAborted(options.signal);
    const missing = instructions.map((_, i) => i).filter((i) => this.#answers[i] === undefined);
    const fb = await fallbackFor(
      this.#fallback,
      image,
      instructions,
      missing,
      options,
      (i) => `no fixed caption for instruction ${i + 1} ("${instructions[i]}")`,
    );
    return instructions.map((_, i) => this.#answers[i] ?? fb.get(i) ?? '');
  }

  async dispose(): Promise<void> {
    await this.#fallback?.dispose();
  }
}

export interface SidecarCaptionerOptions {
  /**
   * Dataset root holding the caption folders. Default: the image's folder's parent, then the image's
   * folder (official layout: <root>/LR/NAME.png with <root>/highlevel_prompt/NAME.txt).
   */
  root?: string;
  /** Folder per instruction slot (default XPSR_SIDECAR_DIRS). */
  dirs?: readonly string[];
  /** Missing file: 'error' (default), 'empty' (""), or ask `fallback` when given. */
  missing?: 'error' | 'empty';
  fallback?: Captioner;
}

export class SidecarCaptioner implements Captioner {
  readonly kind = 'sidecar';
  readonly id: string;
  readonly cacheable = false;
  readonly #o: SidecarCaptionerOptions;
  readonly #dirs: readonly string[];

  constructor(options: SidecarCaptionerOptions = {}) {
    this.#o = options;
    this.#dirs = options.dirs ?? XPSR_SIDECAR_DIRS;
    this.id = `sidecar:${this.#dirs.join(',')}` + (options.fallback ? `+${options.fallback.id}` : '');
  }

  /** Candidate files for slot `i` of `image`. */
  candidates(image: CaptionImage, i: number, name?: string): string[] {
    const dir = this.#dirs[i];
    if (dir === undefined) return [];
    const file = typeof image === 'string' ? image : image instanceof CaptionPixels ? image.source.path : undefined;
    const stem = name ?? (image instanceof CaptionPixels ? image.source.name : undefined) ?? (file ? path.parse(file).name : undefined);
    if (!stem) {
      throw new XpsrError('ERR_INVALID_ARGUMENT', 'sidecar captions need the image name: pass a path or options.name');
    }
    const roots =
      this.#o.root !== undefined ? [this.#o.root] : file ? [path.dirname(path.dirname(path.resolve(file))), path.dirname(path.resolve(file))] : ['.'];
    return [...new Set(roots)].map((r) => path.join(r, dir, `${stem}.txt`));
  }

  async caption(image: CaptionImage, instructions: readonly string[], options: CaptionOptions = {}): Promise<string[]> {
    throwIfAborted(options.signal);
    const found = new Map<number, string>();
    const tried = new Map<number, string[]>();
    for (let i = 0; i < instructions.length; i++) {
      const files = this.candidates(image, i, options.name);
      tried.set(i, files);
      for (const f of files) {
        try {
          found.set(i, firstLineLeftStripped(await fs.readFile(f, 'utf8')));
          break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
            throw new XpsrError('ERR_IO', `cannot read caption file ${f}: ${(e as Error).message}`, { path: f }, { cause: e });
          }
        }
      }
    }
    const missing = instructions.map((_, i) => i).filter((i) => !found.has(i));
    if (this.#o.missing === 'empty' && !this.#o.fallback) return instructions.map((_, i) => found.get(i) ?? '');
    const fb = await fallbackFor(this.#o.fallback, image, instructions, missing, options, (i) => {
      const files = tried.get(i) ?? [];
      return files.length ? `caption file not found: ${files.join(' or ')}` : `no sidecar folder for instruction ${i + 1}`;
    });
    return instructions.map((_, i) => found.get(i) ?? fb.get(i) ?? '');
  }

  async dispose(): Promise<void> {
    await this.#o.fallback?.dispose();
  }
}
