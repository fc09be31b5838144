/**
 * `xpsr caption <images...>`: both XPSR captions per image, printed, as JSON lines, or written as the
 * official sidecar layout (<out>/highlevel_prompt/NAME.txt, <out>/lowlevel_prompt_q/NAME.txt).
 *
 * Exit status: 0 all captioned, 1 some image failed (missing, empty or unreadable image, captioner error),
 * 2 usage error (bad flag, no captioner configured, no images), 130 interrupted. Every error line ends
 * with the error's code: `xpsr caption: photo.png: Image 'photo.png' is empty (0 bytes) [ERR_IMAGE_EMPTY]`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { XpsrError } from '../errors.js';
import { CAPTIONER_CLI_HELP, CAPTIONER_CLI_OPTIONS, captionerOptionsFromArgs, xpsrInstructionsFromArgs } from '../captioners/cli.js';
import { type CaptionerFactoryOptions, captionXpsr, createCaptionerFromOptions, inferCaptionerKind } from '../captioners/factory.js';
import { XPSR_SIDECAR_DIRS } from '../captioners/fixed.js';
import { prepareImage } from '../captioners/image.js';
import type { Captioner } from '../captioners/types.js';

export const CAPTION_HELP = `Usage: xpsr caption [options] <image|folder>...

Captions each image with the two XPSR instructions (high-level content, low-level quality) from one image
encoding, and prints them, writes JSON lines, or writes the official caption files. A captioner must be
configured: a LLaVA model (--llava-model/--llava-mmproj), a server (--caption-url), caption files
(--prompt-dir) or fixed captions (--prompt-high and --prompt-low).

${CAPTIONER_CLI_HELP}
Output (default: "NAME\\n  high: ...\\n  low: ..." on stdout)
  --out DIR                 write DIR/highlevel_prompt/NAME.txt and DIR/lowlevel_prompt_q/NAME.txt
  --overwrite               with --out: caption again even if both files exist (default: skip them)
  --jsonl                   one JSON object per image on stdout: {"image","name","high","low","ms"}
                            (a failed image: {"image","name","error","code"})
  -q, --quiet               no progress on stderr
  -h, --help

Folders are expanded to their image files (png, jpg, jpeg, webp, gif, tif, tiff, avif; not recursive).
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

// What lib/image decodes (sharp); .bmp is not read by sharp, so it is not listed.
const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif']);

function expandInputs(inputs: string[]): string[] {
  const out: string[] = [];
  for (const p of inputs) {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      out.push(p); // reported as unreadable when decoded
      continue;
    }
    if (st.isDirectory()) {
      const files = fs
        .readdirSync(p)
        .filter((f) => IMAGE_EXT.has(path.extname(f).toLowerCase()))
        .sort();
      out.push(...files.map((f) => path.join(p, f)));
    } else {
      out.push(p);
    }
  }
  return out;
}

/** Usage problems found before any model is loaded: a coded XpsrError, or undefined. */
function usageProblem(factory: CaptionerFactoryOptions, v: { out?: string; jsonl?: boolean }): XpsrError | undefined {
  if (v.jsonl && v.out) return new XpsrError('ERR_INVALID_OPTION', '--jsonl and --out exclude each other', { option: '--jsonl' });
  if (v.out !== undefined) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(v.out);
    } catch {
      /* created later */
    }
    if (st && !st.isDirectory()) return new XpsrError('ERR_INVALID_OPTION', `--out ${v.out} exists and is not a folder`, { option: '--out' });
  }
  if (inferCaptionerKind(factory) === 'none') {
    const missing = [
      factory.promptHigh === undefined ? '--prompt-high' : undefined,
      factory.promptLow === undefined ? '--prompt-low' : undefined,
    ].filter((x): x is string => x !== undefined);
    if (missing.length > 0) {
      return new XpsrError(
        'ERR_INVALID_OPTION',
        (missing.length === 2 ? 'no captioner configured' : `no captioner for the ${missing[0] === '--prompt-high' ? 'high' : 'low'}-level caption`) +
          ': give --llava-model and --llava-mmproj, --caption-url, --prompt-dir, or fixed captions (' +
          missing.join(' and ') +
          ')',
        { option: '--captioner' },
      );
    }
  }
  return undefined;
}

const USAGE_CODES = new Set(['ERR_INVALID_OPTION', 'ERR_INVALID_ARGUMENT', 'ERR_WEIGHTS_MISSING']);

function describe(e: unknown): { message: string; code?: string } {
  const err = e as { code?: unknown; message?: unknown };
  return { message: typeof err?.message === 'string' ? err.message : String(e), code: typeof err?.code === 'string' ? err.code : undefined };
}

/**
 * Runs `xpsr caption`; `argv` are the arguments after "caption". Returns the exit status (never calls
 * process.exit).
 */
export async function runCaptionCommand(argv: string[], io: CaptionCommandIo = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const usage = (message: string, code = 'ERR_INVALID_OPTION') => {
    stderr.write(`xpsr caption: ${message} [${code}]\nRun 'xpsr caption --help' for usage.\n`);
    return 2;
  };
  const parse = (args: string[]) =>
    parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        ...CAPTIONER_CLI_OPTIONS,
        out: { type: 'string' },
        overwrite: { type: 'boolean' },
        jsonl: { type: 'boolean' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (e) {
    return usage(describe(e).message);
  }
  const v = parsed.values;
  if (v.help) {
    stdout.write(CAPTION_HELP);
    return 0;
  }
  const log = (m: string) => {
    if (!v.quiet) stderr.write(`${m}\n`);
  };
  let factory: CaptionerFactoryOptions;
  try {
    if (parsed.positionals.length === 0) throw new XpsrError('ERR_INVALID_ARGUMENT', 'no images given');
    factory = { ...captionerOptionsFromArgs(v), ...(io.factory ?? {}) };
    const problem = usageProblem(factory, v);
    if (problem) throw problem;
  } catch (e) {
    const d = describe(e);
    return usage(d.message, d.code);
  }
  const images = expandInputs(parsed.positionals);
  if (images.length === 0) return usage(`no image files in ${parsed.positionals.join(', ')}`, 'ERR_INVALID_ARGUMENT');

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
  let captioner: Captioner | undefined;
  let failed = 0;
  try {
    const t0 = Date.now();
    try {
      captioner = await createCaptionerFromOptions({ ...factory, signal });
    } catch (e) {
      if (signal.aborted) return 130;
      const d = describe(e);
      stderr.write(`xpsr caption: ${d.message}${d.code ? ` [${d.code}]` : ''}\n`);
      return d.code && USAGE_CODES.has(d.code) ? 2 : 1;
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
        // decoded first, whatever the captioner: a missing, empty or unreadable image is an error
        const pixels = await prepareImage(image, name);
        const c = await captionXpsr(captioner, pixels, { instructions, signal, name });
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
        const d = describe(e);
        stderr.write(`xpsr caption: ${image}: ${d.message}${d.code ? ` [${d.code}]` : ''}\n`);
        if (v.jsonl) stdout.write(JSON.stringify({ image, name, error: d.message, code: d.code }) + '\n');
      }
    }
    if (signal.aborted) {
      stderr.write('xpsr caption: interrupted\n');
      return 130;
    }
    if (failed > 0) log(`${failed} of ${images.length} image(s) failed`);
    return failed > 0 ? 1 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await captioner?.dispose();
  }
}
