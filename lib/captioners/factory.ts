// Building a captioner from CLI-style options (used by `xpsr caption` and `xpsr upscale`), and the XPSR
// pair of captions (high-level, low-level) for one image.
import type { Llama, LlamaModel } from 'node-llama-cpp';

import { CaptionCache, CachingCaptioner } from './cache.js';
import { CaptionError } from './errors.js';
import { FixedCaptioner, SidecarCaptioner } from './fixed.js';
import { HttpCaptioner } from './http.js';
import { XPSR_INSTRUCTIONS, XpsrInstructions } from './instructions.js';
import { LlavaCaptioner } from './llava.js';
import { CaptionImage, CaptionOptions, Captioner } from './types.js';

export type CaptionerKind = 'llava' | 'http' | 'sidecar' | 'fixed' | 'none';

export interface CaptionerFactoryOptions {
  /** Which generator: inferred when absent (llavaModel -> llava, captionUrl -> http, promptDir -> sidecar, else none). */
  captioner?: CaptionerKind;
  /** --llava-model / --llava-mmproj */
  llavaModel?: string;
  llavaMmproj?: string;
  /** Share weights with an already loaded node-llama-cpp model instead of llavaModel. */
  llamaModel?: LlamaModel;
  llama?: Llama;
  /** 'auto' (default), 'cpu' / false, 'cuda', 'vulkan' */
  gpu?: 'auto' | 'cpu' | false | 'cuda' | 'vulkan';
  gpuLayers?: number | 'max';
  threads?: number;
  contextSize?: number;
  /** --caption-url and friends */
  captionUrl?: string;
  captionModel?: string;
  captionApiKey?: string;
  captionTimeoutMs?: number;
  captionRetries?: number;
  /** --prompt-high / --prompt-low: fixed captions (win over everything else for their slot). */
  promptHigh?: string;
  promptLow?: string;
  /** --prompt-dir: dataset root with highlevel_prompt/ and lowlevel_prompt_q/ (files win over the generator). */
  promptDir?: string;
  /** With captioner 'sidecar' and no generator: a missing file is an error (default) or "". */
  sidecarMissing?: 'error' | 'empty';
  /** --caption-max-tokens, --caption-temperature, --caption-seed (defaults: 175, 0 = greedy, 0) */
  maxTokens?: number;
  temperature?: number;
  seed?: number;
  /** --caption-cache DIR: on-disk cache; false disables caching; default: in memory. */
  captionCache?: string | false;
  /** A shared cache instance (wins over captionCache). */
  cache?: CaptionCache;
  signal?: AbortSignal;
}

function inferKind(o: CaptionerFactoryOptions): CaptionerKind {
  if (o.captioner) return o.captioner;
  if (o.llavaModel || o.llamaModel || o.llavaMmproj) return 'llava';
  if (o.captionUrl) return 'http';
  if (o.promptDir) return 'sidecar';
  return 'none';
}

/**
 * Captioner for the options: fixed strings (--prompt-high/--prompt-low) first, then sidecar files
 * (--prompt-dir), then the generator (llava | http) behind a cache. No generator and nothing else: empty
 * captions ("", as the official code has for missing captions). Slot 0 = high-level, slot 1 = low-level.
 */
export async function createCaptionerFromOptions(o: CaptionerFactoryOptions = {}): Promise<Captioner> {
  const kind = inferKind(o);
  const known: CaptionerKind[] = ['llava', 'http', 'sidecar', 'fixed', 'none'];
  if (!known.includes(kind)) {
    throw new CaptionError('ERR_INVALID_ARGUMENT', `unknown captioner '${String(kind)}' (expected ${known.join(', ')})`);
  }
  let generator: Captioner | undefined;
  if (kind === 'llava') {
    if (!o.llavaMmproj) {
      throw new CaptionError('ERR_MMPROJ_MISSING', 'the llava captioner needs --llava-mmproj (the mmproj GGUF of the model)');
    }
    if (!o.llavaModel && !o.llamaModel) {
      throw new CaptionError('ERR_MODEL_MISSING', 'the llava captioner needs --llava-model (the language model GGUF)');
    }
    generator = await LlavaCaptioner.create({
      model: o.llavaModel, llamaModel: o.llamaModel, mmproj: o.llavaMmproj, llama: o.llama,
      gpu: o.gpu === 'cpu' ? false : o.gpu, gpuLayers: o.gpuLayers, threads: o.threads, contextSize: o.contextSize,
      maxTokens: o.maxTokens, temperature: o.temperature, seed: o.seed, signal: o.signal,
    });
  } else if (kind === 'http') {
    if (!o.captionUrl) throw new CaptionError('ERR_INVALID_ARGUMENT', 'the http captioner needs --caption-url');
    generator = new HttpCaptioner({
      url: o.captionUrl, model: o.captionModel, apiKey: o.captionApiKey ?? process.env.XPSR_CAPTION_API_KEY,
      timeoutMs: o.captionTimeoutMs, retries: o.captionRetries, maxTokens: o.maxTokens, temperature: o.temperature, seed: o.seed,
    });
  }
  let c: Captioner | undefined = generator;
  if (c && o.captionCache !== false) c = new CachingCaptioner(c, o.cache ?? new CaptionCache({ dir: o.captionCache || undefined }));
  if (o.promptDir || kind === 'sidecar') {
    c = new SidecarCaptioner({ root: o.promptDir, fallback: c, missing: o.sidecarMissing });
  }
  if (o.promptHigh !== undefined || o.promptLow !== undefined || !c) {
    c = new FixedCaptioner({
      answers: [o.promptHigh ?? (c ? undefined : ''), o.promptLow ?? (c ? undefined : '')],
      fallback: c,
    });
  }
  return c;
}

export interface XpsrCaptions {
  high: string;
  low: string;
}

export interface XpsrCaptionOptions extends CaptionOptions {
  /** Override one or both instructions (defaults: XPSR_INSTRUCTIONS). */
  instructions?: Partial<XpsrInstructions>;
}

/** Both XPSR captions of one image (one image encoding with the llava captioner). */
export async function captionXpsr(captioner: Captioner, image: CaptionImage, options: XpsrCaptionOptions = {}): Promise<XpsrCaptions> {
  const { instructions, ...rest } = options;
  const high = instructions?.high ?? XPSR_INSTRUCTIONS.high;
  const low = instructions?.low ?? XPSR_INSTRUCTIONS.low;
  const [h, l] = await captioner.caption(image, [high, low], rest);
  return { high: h ?? '', low: l ?? '' };
}
