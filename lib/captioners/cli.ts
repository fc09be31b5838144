// The captioner flags shared by `xpsr caption` (lib/cli/caption.ts) and `xpsr upscale` (lib/cli/upscale.ts):
// their parseArgs() spec, their help text, and their translation into factory options.
import { XpsrError } from '../errors.js';
import { type CaptionerFactoryOptions, createCaptionerFromOptions } from './factory.js';
import type { Captioner } from './types.js';
import { XPSR_INSTRUCTIONS, type XpsrInstructions } from './instructions.js';

/** Help lines of CAPTIONER_CLI_OPTIONS (part of the help text of `xpsr caption` and `xpsr upscale`). */
export const CAPTIONER_CLI_HELP = `Captioner (default: inferred from the options given)
  --captioner llava|http|sidecar|fixed
  --llava-model FILE        LLaVA-1.5 language model GGUF (e.g. a llava-v1.5-7b Q4_K_M conversion)
  --llava-mmproj FILE       its multimodal projector GGUF (mmproj)
  --llava-low-model FILE    a second LLaVA-style model for the low-level caption only (e.g. a Q-Instruct
                            conversion, as the paper does it); default: --llava-model
  --llava-low-mmproj FILE   its mmproj (default: --llava-mmproj). One model answers both captions from
                            one image encoding; two models each answer their own
  --llava-gpu auto|cpu|cuda|vulkan  node-llama-cpp backend (default auto)
  --llava-gpu-layers N|max  language-model layers on the GPU (default max on GPU)
  --llava-threads N         CPU threads (default: cores - 1)
  --llava-context-size N    KV cache tokens (default 2048)
  --caption-url URL         OpenAI-compatible server (llama-server --mmproj, vLLM, Ollama /v1)
  --caption-model NAME      "model" field sent to the server
  --caption-api-key KEY     bearer token (default: env XPSR_CAPTION_API_KEY)
  --caption-timeout MS      per request (default 120000)
  --caption-retries N       on network errors, timeouts, 429/5xx (default 2)
  --prompt-high TEXT        fixed high-level caption (skips generation for it)
  --prompt-low TEXT         fixed low-level caption
  --prompt-dir DIR          read DIR/highlevel_prompt/NAME.txt and DIR/lowlevel_prompt_q/NAME.txt first

Generation
  --instruction-high TEXT   default: "${XPSR_INSTRUCTIONS.high}"
  --instruction-low TEXT    default: "${XPSR_INSTRUCTIONS.low}"
  --caption-max-tokens N    per answer (default 175)
  --caption-temperature T   default 0 (greedy)
  --caption-seed N          sampling seed when temperature > 0
  --caption-cache DIR       on-disk caption cache (content hash + model + instruction); default in memory
  --no-caption-cache        no caching
`;

/**
 * node:util parseArgs() spec of the captioner options shared by `xpsr caption` and `xpsr upscale`
 * (--captioner, --llava-model, --llava-mmproj, --caption-url, --prompt-high, ...). Spread it into a command's
 * own options and pass the parsed values to captionerOptionsFromArgs().
 */
export const CAPTIONER_CLI_OPTIONS = {
  captioner: { type: 'string' },
  'llava-model': { type: 'string' },
  'llava-mmproj': { type: 'string' },
  'llava-low-model': { type: 'string' },
  'llava-low-mmproj': { type: 'string' },
  'llava-gpu': { type: 'string' },
  'llava-gpu-layers': { type: 'string' },
  'llava-threads': { type: 'string' },
  'llava-context-size': { type: 'string' },
  'caption-url': { type: 'string' },
  'caption-model': { type: 'string' },
  'caption-api-key': { type: 'string' },
  'caption-timeout': { type: 'string' },
  'caption-retries': { type: 'string' },
  'prompt-high': { type: 'string' },
  'prompt-low': { type: 'string' },
  'prompt-dir': { type: 'string' },
  'caption-max-tokens': { type: 'string' },
  'caption-temperature': { type: 'string' },
  'caption-seed': { type: 'string' },
  'caption-cache': { type: 'string' },
  'no-caption-cache': { type: 'boolean' },
  'instruction-high': { type: 'string' },
  'instruction-low': { type: 'string' },
} as const;

export type ParsedCaptionerArgs = {
  [K in keyof typeof CAPTIONER_CLI_OPTIONS]?: (typeof CAPTIONER_CLI_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string;
};

/** XpsrError(ERR_INVALID_OPTION) naming the flag: "--llava-gpu must be auto, cpu, cuda or vulkan, got 'x'". */
export function badFlag(flag: string, message: string): XpsrError {
  return new XpsrError('ERR_INVALID_OPTION', `${flag} ${message}`, { option: flag });
}

function num(name: string, v: string | undefined, opts: { int?: boolean; min?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (opts.int && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min)) {
    throw badFlag(
      `--${name}`,
      `expects ${opts.int ? 'an integer' : 'a number'}` + (opts.min !== undefined ? ` >= ${opts.min}` : '') + `, got '${v}'`,
    );
  }
  return n;
}

/**
 * Factory options from parsed CAPTIONER_CLI_OPTIONS values; throws XpsrError(ERR_INVALID_OPTION) with a
 * message naming the flag. `--captioner fixed` needs --prompt-high and/or --prompt-low.
 */
export function captionerOptionsFromArgs(v: ParsedCaptionerArgs): CaptionerFactoryOptions {
  const kind = v.captioner as CaptionerFactoryOptions['captioner'] | 'fixed';
  if (kind !== undefined && !['llava', 'http', 'sidecar', 'fixed'].includes(kind)) {
    throw badFlag('--captioner', `must be llava, http, sidecar or fixed, got '${kind}'`);
  }
  const gpu = v['llava-gpu'] as CaptionerFactoryOptions['gpu'];
  if (gpu !== undefined && !['auto', 'cpu', 'cuda', 'vulkan'].includes(gpu as string)) {
    throw badFlag('--llava-gpu', `must be auto, cpu, cuda or vulkan, got '${String(gpu)}'`);
  }
  if (v['caption-cache'] !== undefined && v['no-caption-cache']) {
    throw badFlag('--caption-cache', 'and --no-caption-cache exclude each other');
  }
  if (kind === 'fixed' && v['prompt-high'] === undefined && v['prompt-low'] === undefined) {
    throw badFlag('--captioner fixed', 'needs --prompt-high and/or --prompt-low');
  }
  return {
    captioner: kind === 'fixed' ? 'none' : kind,
    llavaModel: v['llava-model'],
    llavaMmproj: v['llava-mmproj'],
    llavaLowModel: v['llava-low-model'],
    llavaLowMmproj: v['llava-low-mmproj'],
    gpu,
    gpuLayers: v['llava-gpu-layers'] === 'max' ? 'max' : num('llava-gpu-layers', v['llava-gpu-layers'], { int: true, min: 0 }),
    threads: num('llava-threads', v['llava-threads'], { int: true, min: 1 }),
    contextSize: num('llava-context-size', v['llava-context-size'], { int: true, min: 64 }),
    captionUrl: v['caption-url'],
    captionModel: v['caption-model'],
    captionApiKey: v['caption-api-key'],
    captionTimeoutMs: num('caption-timeout', v['caption-timeout'], { min: 1 }),
    captionRetries: num('caption-retries', v['caption-retries'], { int: true, min: 0 }),
    promptHigh: v['prompt-high'],
    promptLow: v['prompt-low'],
    promptDir: v['prompt-dir'],
    maxTokens: num('caption-max-tokens', v['caption-max-tokens'], { int: true, min: 0 }),
    temperature: num('caption-temperature', v['caption-temperature'], { min: 0 }),
    seed: num('caption-seed', v['caption-seed'], { int: true, min: 0 }),
    captionCache: v['no-caption-cache'] ? false : v['caption-cache'],
  };
}

/** The two instructions from parsed CAPTIONER_CLI_OPTIONS values (defaults: XPSR_INSTRUCTIONS). */
export function xpsrInstructionsFromArgs(v: ParsedCaptionerArgs): XpsrInstructions {
  return { high: v['instruction-high'] ?? XPSR_INSTRUCTIONS.high, low: v['instruction-low'] ?? XPSR_INSTRUCTIONS.low };
}

/** Whether any captioner flag was given. */
export function hasCaptionerArgs(v: ParsedCaptionerArgs): boolean {
  return Object.keys(CAPTIONER_CLI_OPTIONS).some((k) => v[k as keyof ParsedCaptionerArgs] !== undefined);
}

/** The captioner the flags describe (xpsr serve, xpsr worker), or undefined when none was given. */
export async function captionerFromArgs(v: ParsedCaptionerArgs): Promise<Captioner | undefined> {
  return hasCaptionerArgs(v) ? createCaptionerFromOptions(captionerOptionsFromArgs(v)) : undefined;
}
