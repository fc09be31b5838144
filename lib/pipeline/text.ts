/**
 * Text conditioning: CLIP tokenizer + text encoder with a small cache (the negative prompts and the
 * low-level negative text are the same for every image). Each text is encoded on its own (batch 1, as
 * the official pipeline does) and rows are stacked into the CFG batch.
 */
import type { Tensor } from '../engine/engine.js';
import type { ClipTokenizer } from '../tokenizer/index.js';
import { catBatch } from './tensor-ops.js';

export type LongPromptMode = 'truncate' | 'chunks';

/** What the conditioner needs of a text encoder: the native TextEncoder, or lib/onnx's onnxruntime one. */
export interface TextEncoderLike {
  encode(ids: Int32Array, shape: [number, number], options?: { signal?: AbortSignal }): Promise<{ lastHiddenState: Tensor }>;
  unload(): void;
}

export class TextConditioner {
  readonly #cache = new Map<string, Tensor>();
  readonly #maxEntries: number;

  constructor(
    readonly tokenizer: ClipTokenizer,
    readonly encoder: TextEncoderLike,
    maxEntries = 64,
  ) {
    this.#maxEntries = maxEntries;
  }

  /** [1, 77, D] for `truncate` (official); [1, 77*k, D] for `chunks` (k 75-token chunks, joined). */
  async encode(text: string, mode: LongPromptMode = 'truncate', signal?: AbortSignal, chunks?: number): Promise<Tensor> {
    const key = `${mode}:${chunks ?? 0}:${text}`;
    const hit = this.#cache.get(key);
    if (hit) {
      this.#cache.delete(key);
      this.#cache.set(key, hit);
      return hit;
    }
    let idsList: Int32Array[];
    if (mode === 'chunks') {
      idsList = this.tokenizer.encodeChunks(text);
      while (chunks !== undefined && idsList.length < chunks) idsList.push(this.tokenizer.encodeChunks('')[0]);
    } else {
      idsList = [this.tokenizer.encode(text).ids];
    }
    const parts: Tensor[] = [];
    for (const ids of idsList) {
      const r = await this.encoder.encode(ids, [1, ids.length], { signal });
      parts.push(r.lastHiddenState);
    }
    const out = parts.length === 1 ? parts[0] : joinSequence(parts);
    this.#cache.set(key, out);
    while (this.#cache.size > this.#maxEntries) this.#cache.delete(this.#cache.keys().next().value as string);
    return out;
  }

  /** Encodes each row's text and stacks them: [rows, L, D]. With `chunks`, rows are padded to equal length. */
  async encodeRows(texts: string[], mode: LongPromptMode, signal?: AbortSignal): Promise<Tensor> {
    let n: number | undefined;
    if (mode === 'chunks') n = Math.max(...texts.map((t) => this.tokenizer.encodeChunks(t).length));
    const rows: Tensor[] = [];
    for (const t of texts) rows.push(await this.encode(t, mode, signal, n));
    return catBatch(rows);
  }

  clear(): void {
    this.#cache.clear();
  }
}

/** Joins [1, L_i, D] tensors along the sequence axis. */
function joinSequence(parts: Tensor[]): Tensor {
  const D = parts[0].shape[2];
  const L = parts.reduce((a, p) => a + p.shape[1], 0);
  const out = new Float32Array(L * D);
  let o = 0;
  for (const p of parts) {
    out.set(p.data, o);
    o += p.data.length;
  }
  return { shape: [1, L, D], data: out };
}
