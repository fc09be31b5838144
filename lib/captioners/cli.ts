// `xpsr caption <images...>`: both XPSR captions per image, printed, as JSON lines, or written as the
// official sidecar layout (<out>/highlevel_prompt/NAME.txt, <out>/lowlevel_prompt_q/NAME.txt).
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { CaptionError } from './errors.js';
import { CaptionerFactoryOptions, captionXpsr, createCaptionerFromOptions } from './factory.js';
import { XPSR_SIDECAR_DIRS } from './fixed.js';
import { XPSR_INSTRUCTIONS, XpsrInstructions } from './instructions.js';
import type { Captioner } from './types.js';

export const CAPTION_HELP = `Usage: xpsr caption [options] <image|folder>...

Captions each image with the two XPSR instructions (high-level content, low-level quality) from one image
encoding, and prints them, writes JSON lines, or writes the official caption files.

Captioner (default: inferred from the options given)
  --captioner llava|http|sidecar|fixed
  --llava-model FILE        LLaVA-1.5 language model GGUF (e.g. a llava-v1.5-7b Q4_K_M conversion)
  --llava-mmproj FILE       its multimodal projector GGUF (mmproj)
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

Output (default: "NAME\\n  high: ...\\n  low: ..." on stdout)
  --out DIR                 write DIR/highlevel_prompt/NAME.txt and DIR/lowlevel_prompt_q/NAME.txt
  --overwrite               with --out: caption again even if both files exist (default: skip them)
  --jsonl                   one JSON object per image on stdout: {"image","name","high","low","ms"}
  -q, --quiet               no progress on stderr
  -h, --help

Folders are expanded to their image files (png, jpg, jpeg, webp, bmp, gif, tif, tiff; not recursive).
Exit status: 0 all captioned, 1 some image failed, 2 usage error, 130 interrupted.
`;

export interface CaptionCommandIo {
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Cancels the run (default: SIGINT / SIGTERM). */
  signal?: AbortSignal;
  /** Extra factory options (e.g. a shared node-llama-cpp instance). */
  factory?: Partial<CaptionerFactoryOptions>;
}

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg', '.webp', '.bmp', '.gif', '.tif', '.tiff']);

function expandInputs(inputs: string[]): string[] {
  const out: string[] = [];
  for (const p of inputs) {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      out.push(p); // reported as missing when captioned
      continue;
    }
    if (st.isDirectory()) {
      const files = fs.readdirSync(p).filter((f) => IMAGE_EXT.has(path.extname(f).toLowerCase())).sort();
      out.push(...files.map((f) => path.join(p, f)));
    } else {
      out.push(p);
    }
  }
  return out;
}

function num(name: string, v: string | undefined, opts: { int?: boolean; min?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (opts.int && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min)) {
    throw new CaptionError('ERR_INVALID_ARGUMENT', `--${name} expects ${opts.int ? 'an integer' : 'a number'}` +
      (opts.min !== undefined ? ` >= ${opts.min}` : '') + `, got '${v}'`);
  }
  return n;
}

/**
 * node:util parseArgs() spec of the captioner options shared by `xpsr caption` and `xpsr upscale`
 * (--captioner, --llava-model, --llava-mmproj, --caption-url, --prompt-high, ...). Spread it into a command's
 * own options and pass the parsed values to captionerOptionsFromArgs().
 */
export const CAPTIONER_CLI_OPTIONS = {
  captioner: { type: 'string' }, 'llava-model': { type: 'string' }, 'llava-mmproj': { type: 'string' },
  'llava-gpu': { type: 'string' }, 'llava-gpu-layers': { type: 'string' }, 'llava-threads': { type: 'string' },
  'llava-context-size': { type: 'string' },
  'caption-url': { type: 'string' }, 'caption-model': { type: 'string' }, 'caption-api-key': { type: 'string' },
  'caption-timeout': { type: 'string' }, 'caption-retries': { type: 'string' },
  'prompt-high': { type: 'string' }, 'prompt-low': { type: 'string' }, 'prompt-dir': { type: 'string' },
  'caption-max-tokens': { type: 'string' }, 'caption-temperature': { type: 'string' }, 'caption-seed': { type: 'string' },
  'caption-cache': { type: 'string' }, 'no-caption-cache': { type: 'boolean' },
  'instruction-high': { type: 'string' }, 'instruction-low': { type: 'string' },
} as const;

/** Help lines of CAPTIONER_CLI_OPTIONS (for the help text of other commands). */
export const CAPTIONER_CLI_HELP = CAPTION_HELP.slice(CAPTION_HELP.indexOf('Captioner ('), CAPTION_HELP.indexOf('Output ('));

type ParsedCaptionerArgs = { [K in keyof typeof CAPTIONER_CLI_OPTIONS]?: (typeof CAPTIONER_CLI_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

/**
 * Factory options from parsed CAPTIONER_CLI_OPTIONS values; throws CaptionError('ERR_INVALID_ARGUMENT') with
 * a message naming the flag. `--captioner fixed` needs --prompt-high and/or --prompt-low.
 */
export function captionerOptionsFromArgs(v: ParsedCaptionerArgs): CaptionerFactoryOptions {
  const kind = v.captioner as CaptionerFactoryOptions['captioner'] | 'fixed';
  if (kind !== undefined && !['llava', 'http', 'sidecar', 'fixed'].includes(kind)) {
    throw new CaptionError('ERR_INVALID_ARGUMENT', `--captioner must be llava, http, sidecar or fixed, got '${kind}'`);
  }
  const gpu = v['llava-gpu'] as CaptionerFactoryOptions['gpu'];
  if (gpu !== undefined && !['auto', 'cpu', 'cuda', 'vulkan'].includes(gpu as string)) {
    throw new CaptionError('ERR_INVALID_ARGUMENT', `--llava-gpu must be auto, cpu, cuda or vulkan, got '${String(gpu)}'`);
  }
  if (v['caption-cache'] !== undefined && v['no-caption-cache']) {
    throw new CaptionError('ERR_INVALID_ARGUMENT', '--caption-cache and --no-caption-cache exclude each other');
  }
  if (kind === 'fixed' && v['prompt-high'] === undefined && v['prompt-low'] === undefined) {
    throw new CaptionError('ERR_INVALID_ARGUMENT', '--captioner fixed needs --prompt-high and/or --prompt-low');
  }
  return {
    captioner: kind === 'fixed' ? 'none' : kind,
    llavaModel: v['llava-model'], llavaMmproj: v['llava-mmproj'], gpu,
    gpuLayers: v['llava-gpu-layers'] === 'max' ? 'max' : num('llava-gpu-layers', v['llava-gpu-layers'], { int: true, min: 0 }),
    threads: num('llava-threads', v['llava-threads'], { int: true, min: 1 }),
    contextSize: num('llava-context-size', v['llava-context-size'], { int: true, min: 64 }),
    captionUrl: v['caption-url'], captionModel: v['caption-model'], captionApiKey: v['caption-api-key'],
    captionTimeoutMs: num('caption-timeout', v['caption-timeout'], { min: 1 }),
    captionRetries: num('caption-retries', v['caption-retries'], { int: true, min: 0 }),
    promptHigh: v['prompt-high'], promptLow: v['prompt-low'], promptDir: v['prompt-dir'],
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

/**
 * Runs `xpsr caption`; `argv` are the arguments after "caption". Returns the exit status (never calls
 * process.exit).
 */
export async function runCaptionCommand(argv: string[], io: CaptionCommandIo = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  let parsed: ReturnType<typeof parse>;
  function parse(args: string[]) {
    return parseArgs({
      args, allowPositionals: true, strict: true,
      options: {
        ...CAPTIONER_CLI_OPTIONS,
        out: { type: 'string' }, overwrite: { type: 'boolean' }, jsonl: { type: 'boolean' },
        quiet: { type: 'boolean', short: 'q' }, help: { type: 'boolean', short: 'h' },
      },
    });
  }
  try {
    parsed = parse(argv);
  } catch (e) {
    stderr.write(`xpsr caption: ${(e as Error).message}\nRun 'xpsr caption --help' for usage.\n`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    stdout.write(CAPTION_HELP);
    return 0;
  }
  const log = (m: string) => { if (!v.quiet) stderr.write(`${m}\n`); };
  let factory: CaptionerFactoryOptions;
  try {
    if (parsed.positionals.length === 0) throw new CaptionError('ERR_INVALID_ARGUMENT', 'no images given');
    if (v.jsonl && v.out) throw new CaptionError('ERR_INVALID_ARGUMENT', '--jsonl and --out exclude each other');
    factory = { ...captionerOptionsFromArgs(v), ...(io.factory ?? {}) };
  } catch (e) {
    stderr.write(`xpsr caption: ${(e as Error).message}\nRun 'xpsr caption --help' for usage.\n`);
    return 2;
  }

  const ctl = new AbortController();
  const onSignal = () => ctl.abort(new Error('interrupted'));
  const external = io.signal;
  if (external) {
    if (external.aborted) ctl.abort(external.reason);
    else external.addEventListener('abort', () => ctl.abort(external.reason), { once: true });
  } else {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  const signal = ctl.signal;
  const instructions = xpsrInstructionsFromArgs(v);
  const images = expandInputs(parsed.positionals);
  let captioner: Captioner | undefined;
  let failed = 0;
  try {
    if (images.length === 0) {
      stderr.write('xpsr caption: no image files found\n');
      return 1;
    }
    const t0 = Date.now();
    try {
      captioner = await createCaptionerFromOptions({ ...factory, signal });
    } catch (e) {
      if (signal.aborted) return 130;
      const code = (e as { code?: string }).code;
      stderr.write(`xpsr caption: ${(e as Error).message}${code ? ` [${code}]` : ''}\n`);
      return code === 'ERR_INVALID_ARGUMENT' || code === 'ERR_MODEL_MISSING' || code === 'ERR_MMPROJ_MISSING' ? 2 : 1;
    }
    log(`captioner ${captioner.id} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${images.length} image(s)`);
    for (const [k, image] of images.entries()) {
      if (signal.aborted) break;
      const name = path.parse(image).name;
      const files = v.out ? XPSR_SIDECAR_DIRS.map((d) => path.join(v.out!, d, `${name}.txt`)) : [];
      if (v.out && !v.overwrite && files.every((f) => fs.existsSync(f))) {
        log(`[${k + 1}/${images.length}] ${image}: captions exist, skipped`);
        continue;
      }
      const ti = Date.now();
      try {
        const c = await captionXpsr(captioner, image, { instructions, signal });
        const ms = Date.now() - ti;
        if (v.out) {
          for (const [i, f] of files.entries()) {
            fs.mkdirSync(path.dirname(f), { recursive: true });
            fs.writeFileSync(f, i === 0 ? c.high : c.low);
          }
        } else if (v.jsonl) {
          stdout.write(JSON.stringify({ image, name, high: c.high, low: c.low, ms }) + '\n');
        } else {
          stdout.write(`${image}\n  high: ${c.high}\n  low: ${c.low}\n`);
        }
        log(`[${k + 1}/${images.length}] ${image}: ${(ms / 1000).toFixed(1)} s`);
      } catch (e) {
        if (signal.aborted) break;
        failed++;
        const code = (e as { code?: string }).code;
        stderr.write(`xpsr caption: ${image}: ${(e as Error).message}${code ? ` [${code}]` : ''}\n`);
        if (v.jsonl) stdout.write(JSON.stringify({ image, name, error: (e as Error).message, code }) + '\n');
      }
    }
    if (signal.aborted) {
      stderr.write('xpsr caption: interrupted\n');
      return 130;
    }
    return failed > 0 ? 1 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await captioner?.dispose();
  }
}
