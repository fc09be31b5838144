// The captioner interface: one image, N instructions -> N answers.

/** Decoded pixels. `channels` 3 (RGB, default), 4 (RGBA: alpha is dropped) or 1 (grey). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels?: 1 | 3 | 4;
}

/**
 * A file path, the bytes of an encoded image (any format lib/image reads: PNG, JPEG, WebP, TIFF, GIF, ...),
 * or raw pixels. Paths and bytes are decoded by the library's image decoder (lib/image, EXIF orientation
 * applied, alpha dropped), like the image given to upscale().
 */
export type CaptionImage = string | Uint8Array | RawImage;

export interface GenerationOptions {
  /** Upper bound of generated tokens per answer. */
  maxTokens?: number;
  /** 0 (default) = greedy decoding. */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampler when temperature > 0. */
  seed?: number;
}

export interface CaptionOptions extends GenerationOptions {
  signal?: AbortSignal;
  /**
   * Name of the image (file stem, used by sidecar captioners and in messages) when `image` is not a path.
   */
  name?: string;
}

export interface Captioner {
  /** 'llava' | 'http' | 'fixed' | 'sidecar' | 'cache' | ... */
  readonly kind: string;
  /**
   * Identity of what produces the answers (model files, endpoint + model name, prompt format, default
   * generation settings). Part of cache keys: two captioners with the same id answer alike.
   */
  readonly id: string;
  /** False for captioners whose answers are free to recompute (fixed strings, sidecar files). */
  readonly cacheable: boolean;
  /** Answers `instructions[i]` about `image` in `result[i]`. Rejects with an XpsrError (`code`). */
  caption(image: CaptionImage, instructions: readonly string[], options?: CaptionOptions): Promise<string[]>;
  /** Frees native memory / connections. Idempotent. */
  dispose(): Promise<void>;
}

/**
 * One captioner per XPSR caption, as the paper does it (LLaVA for the high-level caption, a Q-Instruct
 * model for the low-level one): `high` answers the high-level instruction, `low` the low-level one. When
 * both are the same object one call answers both, from one image encoding.
 */
export interface CaptionerPair {
  high: Captioner;
  low: Captioner;
}

/** What the `captioner` options accept: one captioner for both captions, or one per caption. */
export type XpsrCaptioner = Captioner | CaptionerPair;

export function isCaptioner(x: unknown): x is Captioner {
  return typeof x === 'object' && x !== null && typeof (x as Captioner).caption === 'function' && typeof (x as Captioner).dispose === 'function';
}

export function isCaptionerPair(x: unknown): x is CaptionerPair {
  return typeof x === 'object' && x !== null && !isCaptioner(x) && isCaptioner((x as CaptionerPair).high) && isCaptioner((x as CaptionerPair).low);
}

export function isRawImage(x: unknown): x is RawImage {
  return (
    typeof x === 'object' &&
    x !== null &&
    !(x instanceof Uint8Array) &&
    (x as RawImage).data instanceof Uint8Array &&
    typeof (x as RawImage).width === 'number'
  );
}
