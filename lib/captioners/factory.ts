// Building a captioner from CLI-style options (used by `xpsr caption` and `xpsr upscale`), and the XPSR
// pair of captions (high-level, low-level) for one image.
import path from 'node:path';

import type { Llama, LlamaModel } from 'node-llama-cpp';

import { invalidOption, XpsrError } from '../errors.js';
import { CaptionCache, CachingCaptioner } from './cache.js';
import { FixedCaptioner, SidecarCaptioner, XPSR_SIDECAR_DIRS } from './fixed.js';
import { HttpCaptioner } from './http.js';
import { XPSR_INSTRUCTIONS, type XpsrInstructions } from './instructions.js';
import { LlavaCaptioner } from './llava.js';
import { HighLowCaptioner } from './pair.js';
import { type CaptionImage, type CaptionOptions, type Captioner, isCaptioner, isCaptionerPair, type XpsrCaptioner } from './types.js';

export type CaptionerKind = 'llava' | 'http' | 'sidecar' | 'fixed' | 'none';

export interface CaptionerFactoryOptions {
  /** Which generator: inferred when absent (llavaModel -> llava, captionUrl -> http, promptDir -> sidecar, else none). */
  captioner?: CaptionerKind;
  /** --llava-model / --llava-mmproj: the LLaVA-1.5 GGUF pair (high-level caption, and low-level unless below). */
  llavaModel?: string;
  llavaMmproj?: string;
  /**
   * --llava-low-model / --llava-low-mmproj: a second LLaVA-style GGUF pair (e.g. a Q-Instruct model) for the
   * low-level caption, as the paper does it. Each defaults to the high-level one's file; when both resolve to
   * the high-level files, one model answers both captions from one image encoding.
   */
  llavaLowModel?: string;
  llavaLowMmproj?: string;
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

/** The generator the options ask for ('none': fixed strings, sidecar files or nothing). */
export function inferCaptionerKind(o: CaptionerFactoryOptions): CaptionerKind {
  if (o.captioner) return o.captioner;
  if (o.llavaModel || o.llamaModel || o.llavaMmproj) return 'llava';
  if (o.captionUrl) return 'http';
  if (o.llavaLowModel || o.llavaLowMmproj) return 'llava';
  if (o.promptDir) return 'sidecar';
  return 'none';
}

function llava(
  o: CaptionerFactoryOptions,
  model: string | undefined,
  mmproj: string | undefined,
  flags: [string, string],
  llamaModel?: LlamaModel,
): Promise<LlavaCaptioner> {
  if (!mmproj) throw invalidOption(flags[1], 'the mmproj GGUF of the LLaVA model', mmproj);
  if (!model && !llamaModel) throw invalidOption(flags[0], 'the language model GGUF of the LLaVA model', model);
  return LlavaCaptioner.create({
    model,
    llamaModel,
    mmproj,
    llama: o.llama,
    gpu: o.gpu === 'cpu' ? false : o.gpu,
    gpuLayers: o.gpuLayers,
    threads: o.threads,
    contextSize: o.contextSize,
    maxTokens: o.maxTokens,
    temperature: o.temperature,
    seed: o.seed,
    signal: o.signal,
  });
}

/** The generators per caption: the same object for both unless a separate low-level model is asked for. */
async function generators(o: CaptionerFactoryOptions, kind: CaptionerKind): Promise<{ high?: Captioner; low?: Captioner }> {
  let high: Captioner | undefined;
  if (kind === 'llava') {
    high = await llava(o, o.llavaModel, o.llavaMmproj, ['--llava-model', '--llava-mmproj'], o.llamaModel);
  } else if (kind === 'http') {
    if (!o.captionUrl) throw invalidOption('--caption-url', 'the URL of an OpenAI-compatible server (the http captioner)', o.captionUrl);
    high = new HttpCaptioner({
      url: o.captionUrl,
      model: o.captionModel,
      apiKey: o.captionApiKey ?? process.env.XPSR_CAPTION_API_KEY,
      timeoutMs: o.captionTimeoutMs,
      retries: o.captionRetries,
      maxTokens: o.maxTokens,
      temperature: o.temperature,
      seed: o.seed,
    });
  }
  if (o.llavaLowModel === undefined && o.llavaLowMmproj === undefined) return { high, low: high };
  const lowModel = o.llavaLowModel ?? o.llavaModel;
  const lowMmproj = o.llavaLowMmproj ?? o.llavaMmproj;
  const same = (a?: string, b?: string) => a !== undefined && b !== undefined && path.resolve(a) === path.resolve(b);
  if (kind === 'llava' && !o.llamaModel && same(lowModel, o.llavaModel) && same(lowMmproj, o.llavaMmproj)) return { high, low: high };
  try {
    return { high, low: await llava(o, lowModel, lowMmproj, ['--llava-low-model', '--llava-low-mmproj']) };
  } catch (e) {
    await high?.dispose();
    throw e;
  }
}

/**
 * Captioner for the options. Each caption has its own chain: its fixed string (--prompt-high / --prompt-low)
 * first, then its sidecar file (--prompt-dir), then its generator (llava | http) behind the caption cache;
 * with neither, "" (as the official code has for missing captions). The two chains are joined by a
 * HighLowCaptioner; when they are the same (one generator, no fixed strings or files) that captioner is
 * returned as it is. One LLaVA model serving both chains encodes each image once (the second caption
 * continues from the image the first one left in the model's cache).
 */
export async function createCaptionerFromOptions(o: CaptionerFactoryOptions = {}): Promise<Captioner> {
  const kind = inferCaptionerKind(o);
  const known: CaptionerKind[] = ['llava', 'http', 'sidecar', 'fixed', 'none'];
  if (!known.includes(kind)) throw invalidOption('captioner', known.join(', '), kind);
  const gen = await generators(o, kind);
  const cache = o.captionCache === false ? undefined : (o.cache ?? new CaptionCache({ dir: o.captionCache || undefined }));
  const cached = (c: Captioner | undefined) => (c && cache ? new CachingCaptioner(c, cache) : c);
  const sidecar = o.promptDir !== undefined || kind === 'sidecar';
  const highGen = cached(gen.high);
  const lowGen = gen.low === gen.high ? highGen : cached(gen.low);
  // one chain per caption: it answers its caption as instruction 0
  const chain = (generator: Captioner | undefined, dir: string, fixed: string | undefined): Captioner => {
    let c = generator;
    if (sidecar) c = new SidecarCaptioner({ root: o.promptDir, dirs: [dir], fallback: c, missing: o.sidecarMissing });
    if (fixed !== undefined || !c) c = new FixedCaptioner({ answers: [fixed ?? ''], fallback: c });
    return c;
  };
  const high = chain(highGen, XPSR_SIDECAR_DIRS[0]!, o.promptHigh);
  const low = chain(lowGen, XPSR_SIDECAR_DIRS[1]!, o.promptLow);
  return high === low ? high : new HighLowCaptioner({ high, low });
}

export interface XpsrCaptions {
  high: string;
  low: string;
}

export interface XpsrCaptionOptions extends CaptionOptions {
  /** Override one or both instructions (defaults: XPSR_INSTRUCTIONS). */
  instructions?: Partial<XpsrInstructions>;
}

/**
 * Both XPSR captions of one image. `captioner` is one Captioner (asked both instructions in one call: one
 * image encoding with a LLaVA captioner) or `{ high, low }` (high asked the high-level instruction, low the
 * low-level one; one call when they are the same captioner).
 */
export async function captionXpsr(captioner: XpsrCaptioner, image: CaptionImage, options: XpsrCaptionOptions = {}): Promise<XpsrCaptions> {
  let c: Captioner;
  if (isCaptionerPair(captioner)) c = new HighLowCaptioner(captioner);
  else if (isCaptioner(captioner)) c = captioner;
  else throw invalidOption('captioner', 'a Captioner or { high, low } Captioners', captioner);
  const { instructions, ...rest } = options;
  const high = instructions?.high ?? XPSR_INSTRUCTIONS.high;
  const low = instructions?.low ?? XPSR_INSTRUCTIONS.low;
  const answers = await c.caption(image, [high, low], rest);
  if (!Array.isArray(answers) || answers.length !== 2 || answers.some((a) => typeof a !== 'string')) {
    throw new XpsrError(
      'ERR_INVALID_OPTION',
      `Invalid option 'captioner': the '${String(c.kind)}' captioner did not answer ` + 'both instructions with strings',
      { option: 'captioner' },
    );
  }
  return { high: answers[0]!, low: answers[1]! };
}
