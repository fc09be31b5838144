/**
 * `xpsr upscale <files or folders...> -o <file or folder> [options]`. Two phases:
 *   1. plan: every flag, input, output path and format is checked and every output name is decided (with
 *      collisions refused) before anything is loaded: a mistake is a usage error (exit 2) naming the flag;
 *   2. run: models load once, images run one by one; a failed image is reported and the others go on
 *      (exit 1); SIGINT cancels the image in progress (exit 130). Outputs are written atomically with the
 *      run's parameters embedded (XMP), so no partial or anonymous file is ever left.
 */
import { accessSync, constants, mkdirSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { XPSR, type UpscaleResult } from '../xpsr.js';
import { resolveWeights } from '../weights/index.js';
import { XpsrError } from '../errors.js';
import { checkLoadOptions, resolveUpscaleOptions, type LoadOptions, type UpscaleOptions } from '../options.js';
import { INPUT_EXTENSIONS, formatFromPath, type OutputFormat } from '../image/io.js';
import type { ProgressEvent } from '../pipeline/core.js';
import { createCaptionerFromOptions, type CaptionerFactoryOptions } from '../captioners/factory.js';
import { CAPTIONER_CLI_HELP, CAPTIONER_CLI_OPTIONS, captionerOptionsFromArgs, xpsrInstructionsFromArgs } from '../captioners/cli.js';
import { EXIT, UsageError, asUsage, choiceFlag, describeError, errorCode, numberFlag, parseFlags, type ParsedFlags } from './common.js';
import { ProgressReporter } from './progress.js';

export const UPSCALE_HELP = `Usage: xpsr upscale <files or folders...> -o <file or folder> [options]
       xpsr upscale - -o - [options] < in.png > out.png      (stdin to stdout)

Weights (or env XPSR_SD / XPSR_WEIGHTS / XPSR_MODEL)
  --sd DIR|FILE|REPO_ID    Stable Diffusion 1.5: diffusers folder, single checkpoint file (.safetensors, .ckpt)
                           or a repo id in the local Hugging Face cache
  --xpsr DIR|REPO_ID       XPSR checkpoint folder (unet/, controlnet/)
  --model DIR              one folder holding all of the above
  --variant fp16           prefer the *.fp16.safetensors weights of a diffusers folder
  --sd-config DIR          tokenizer/, scheduler/ (and configs) for a single-file --sd
  --device auto|cpu|cuda|cuda:N   (default auto: CUDA when usable, else CPU)
  --threads N              CPU threads (default: all)

Restoration (defaults = the official run)
  --scale N                output / input size, 1..16 (default 4)
  --process-size N         minimum short side the networks see, 64..8192 (default 512)
  --steps N                denoising steps, 1..1000 (default 20)
  --guidance G             classifier-free guidance scale, 0..100 (default 4.5; <= 1 disables CFG)
  --conditioning-scale S   ControlNet scale, 0..10 (default 1)
  --seed N                 noise seed (default random, printed and embedded in the output)
  --scheduler ddpm|dpmpp|unipc     (default ddpm)
  --color-fix adain|wavelet|none   (default adain)
  --init lr|noise          start from the noised LR latent (default) or pure noise
  --added-noise-level T    timestep of the second noising of the LR latent, 0..999 (default 800)
  --added-prompt TEXT      appended to the high-level caption (default "clean, high-resolution, 8k, high quality, clear text.")
  --negative-prompt TEXT   high-level negative prompt (default "blurry, dotted, noise, raster lines, unclear, lowres, over-smoothed.")
  --long-prompts truncate|chunks   (default truncate = CLIP's 77 tokens, as official)
  --low-level-guidance official|paper
  --tiling auto|on|off     latent tiling (default auto: above 320x320 latent pixels)
  --tile-size N, --tile-overlap N, --tile-max-pixels N
  --memory-budget-mb N     tile whenever a whole-latent step needs more activation memory than this
  --vae-tiling auto|on|off tiled VAE with whole-image GroupNorm statistics (default auto)
  --max-input-pixels N     refuse larger inputs, 1..4294967296 (default 1048576 = 1 MP; 16 MP output at x4)
  --max-aspect-ratio R     refuse thinner inputs (long side / short side), 1..1024 (default 16)

Captions (default: "" for both, as the official code with empty caption files; --prompt-dir DIR reads the
official layout DIR/highlevel_prompt/NAME.txt and DIR/lowlevel_prompt_q/NAME.txt)
${CAPTIONER_CLI_HELP}
Output
  -o, --output PATH        a file (one input; its extension picks the format), a folder (created;
                           NAME.<format> per input), or - for stdout (one input)
  --format png|jpg|jpeg|webp|tif|tiff   format in a folder or on stdout (default png); with a file it must
                           agree with the extension
  --overwrite              replace existing outputs (default: skip them, reported as skipped)
  --no-metadata            do not embed seed, prompts, model, device and settings (XMP) in the output
  -q, --quiet              no progress or summary (errors are still printed)
  --json                   JSON lines on stdout: progress, done, error, skipped, cancelled, summary
  -h, --help

Inputs: files, folders (their ${INPUT_EXTENSIONS.join(' ')} files, not recursive) or - (stdin).
Two inputs that would be written to the same output (a.png and a.jpg in one folder, or several inputs
to one file) are refused before anything runs.

Exit status: 0 every image written (or skipped because its output exists), 1 an image or the model load
failed (the other images are still processed), 2 usage error (nothing was run), 130 interrupted by SIGINT
(143 SIGTERM; the image in progress is cancelled, no partial file is left).
`;

const OPTIONS = {
  output: { type: 'string', short: 'o' },
  sd: { type: 'string' },
  xpsr: { type: 'string' },
  model: { type: 'string' },
  variant: { type: 'string' },
  'sd-config': { type: 'string' },
  device: { type: 'string' },
  threads: { type: 'string' },
  scale: { type: 'string' },
  'process-size': { type: 'string' },
  steps: { type: 'string' },
  guidance: { type: 'string' },
  'conditioning-scale': { type: 'string' },
  seed: { type: 'string' },
  scheduler: { type: 'string' },
  'color-fix': { type: 'string' },
  init: { type: 'string' },
  'added-noise-level': { type: 'string' },
  'added-prompt': { type: 'string' },
  'negative-prompt': { type: 'string' },
  tiling: { type: 'string' },
  'tile-size': { type: 'string' },
  'tile-overlap': { type: 'string' },
  'tile-max-pixels': { type: 'string' },
  'memory-budget-mb': { type: 'string' },
  'vae-tiling': { type: 'string' },
  'max-input-pixels': { type: 'string' },
  'max-aspect-ratio': { type: 'string' },
  'long-prompts': { type: 'string' },
  'low-level-guidance': { type: 'string' },
  ...CAPTIONER_CLI_OPTIONS,
  format: { type: 'string' },
  overwrite: { type: 'boolean' },
  'no-metadata': { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ParsedFlags<typeof OPTIONS>['values'];

const FORMAT_WORDS = ['png', 'jpg', 'jpeg', 'webp', 'tif', 'tiff'] as const;
const STDIO = '-';

/** One image of the run: where it comes from, where it goes, and whether it is skipped. */
interface Job {
  input: string;
  output: string;
  skip: boolean;
}

/** Everything the run needs, decided before anything is loaded. */
interface Plan {
  jobs: Job[];
  format: OutputFormat;
  load: LoadOptions;
  upscale: UpscaleOptions;
  captioner: CaptionerFactoryOptions;
  metadata: boolean;
}

function statSafe(p: string) {
  try {
    return statSync(p);
  } catch {
    return undefined;
  }
}

/** Files and folders (their image files, sorted) in the order given; '-' stays as is. */
function expandInputs(inputs: string[]): string[] {
  const out: string[] = [];
  for (const p of inputs) {
    if (statSafe(p)?.isDirectory()) {
      out.push(
        ...readdirSync(p)
          .filter((f) => INPUT_EXTENSIONS.includes(path.extname(f).toLowerCase()))
          .sort()
          .map((f) => path.join(p, f)),
      );
    } else {
      out.push(p); // a missing file fails for that image (exit 1), the others still run
    }
  }
  return out;
}

const show = (p: string) => (p === STDIO ? '<stdin>' : p);

/** Phase 1: checks every flag and path and decides every output. Throws UsageError (exit 2). */
function makePlan(v: Values, positionals: string[]): Plan {
  // Inputs and outputs.
  if (positionals.includes(STDIO) && positionals.length > 1) throw new UsageError('- (stdin) must be the only input');
  if (positionals.includes(STDIO) && process.stdin.isTTY) throw new UsageError('- reads the image from stdin, but stdin is a terminal');
  const inputs = expandInputs(positionals);
  if (inputs.length === 0) throw new UsageError(positionals.length ? `no image files in ${positionals.join(', ')}` : 'no input images (see --help)');
  if (!v.output) throw new UsageError('-o <file or folder> is required (- writes to stdout)');
  const formatWord = choiceFlag('--format', v.format, FORMAT_WORDS);
  const folderFormat = formatWord ? formatFromPath(`x.${formatWord}`) : 'png';
  let format: OutputFormat = folderFormat;
  let outputFolder: string | undefined;
  let target: (input: string) => string;
  if (v.output === STDIO) {
    if (inputs.length !== 1) throw new UsageError(`-o - (stdout) takes exactly one input, got ${inputs.length}`);
    if (v.json) throw new UsageError('--json and -o - both write to stdout; use one of them');
    target = () => STDIO;
  } else if (!statSafe(v.output)?.isDirectory() && path.extname(v.output) !== '') {
    format = asUsage(() => formatFromPath(v.output!));
    if (inputs.length > 1 || positionals.some((p) => statSafe(p)?.isDirectory()))
      throw new UsageError(`${inputs.length} inputs would all be written to the one file ${v.output}; give a folder to -o`);
    if (formatWord && folderFormat !== format)
      throw new UsageError(`--format ${formatWord} conflicts with -o ${v.output} (${format}); drop --format or change the extension`);
    const dir = path.dirname(path.resolve(v.output));
    if (!statSafe(dir)?.isDirectory()) throw new UsageError(`the folder of -o ${v.output} does not exist`, 'ERR_IO');
    target = () => v.output!;
  } else {
    const existing = statSafe(v.output);
    if (existing && !existing.isDirectory()) throw new UsageError(`-o ${v.output} exists and is not a folder`, 'ERR_IO');
    outputFolder = v.output;
    const ext = formatWord ?? 'png';
    target = (input) => path.join(v.output!, `${input === STDIO ? 'stdin' : path.parse(input).name}.${ext}`);
  }
  const jobs: Job[] = inputs.map((input) => ({ input, output: target(input), skip: false }));
  const byOutput = new Map<string, string[]>();
  for (const j of jobs) {
    if (j.output === STDIO) continue;
    const key = path.resolve(j.output);
    byOutput.set(key, [...(byOutput.get(key) ?? []), j.input]);
    if (j.input !== STDIO && path.resolve(j.input) === key)
      throw new UsageError(`${j.input} would be overwritten by its own output; choose another -o`);
  }
  const clashes = [...byOutput].filter(([, ins]) => ins.length > 1);
  if (clashes.length) {
    const list = clashes
      .slice(0, 5)
      .map(([out, ins]) => `  ${ins.join(', ')} -> ${path.relative('.', out) || out}`)
      .join('\n');
    throw new UsageError(
      `several inputs would be written to the same output:\n${list}${clashes.length > 5 ? `\n  ... and ${clashes.length - 5} more` : ''}\n` +
        'rename one of each group, or run them into different output folders',
    );
  }
  for (const j of jobs) j.skip = j.output !== STDIO && !v.overwrite && statSafe(j.output) !== undefined;

  // Options: parsed here, checked by the library's own validator (messages come back with flag names).
  const n = numberFlag;
  const tileFlags = ['tile-size', 'tile-overlap', 'tile-max-pixels', 'memory-budget-mb'] as const;
  const upscale: UpscaleOptions = {
    scale: n('--scale', v.scale),
    processSize: n('--process-size', v['process-size']),
    steps: n('--steps', v.steps),
    guidanceScale: n('--guidance', v.guidance),
    conditioningScale: n('--conditioning-scale', v['conditioning-scale']),
    seed: n('--seed', v.seed),
    scheduler: v.scheduler,
    colorFix: v['color-fix'] as UpscaleOptions['colorFix'],
    init: v.init as UpscaleOptions['init'],
    addedNoiseLevel: n('--added-noise-level', v['added-noise-level']),
    addedPrompt: v['added-prompt'],
    negativePrompt: v['negative-prompt'],
    longPrompts: v['long-prompts'] as UpscaleOptions['longPrompts'],
    lowLevelGuidance: v['low-level-guidance'] as UpscaleOptions['lowLevelGuidance'],
    maxInputPixels: n('--max-input-pixels', v['max-input-pixels']),
    maxAspectRatio: n('--max-aspect-ratio', v['max-aspect-ratio']),
    vaeTiling: v['vae-tiling'] as UpscaleOptions['vaeTiling'],
    tiling: tileFlags.some((f) => v[f] !== undefined)
      ? {
          mode: (v.tiling ?? 'auto') as 'auto',
          tileSize: n('--tile-size', v['tile-size']),
          overlap: n('--tile-overlap', v['tile-overlap']),
          maxLatentPixels: n('--tile-max-pixels', v['tile-max-pixels']),
          memoryBudgetMB: n('--memory-budget-mb', v['memory-budget-mb']),
        }
      : (v.tiling as UpscaleOptions['tiling']),
    instructions: xpsrInstructionsFromArgs(v),
  };
  asUsage(() => resolveUpscaleOptions(upscale));
  const load: LoadOptions = {
    sd: v.sd ?? process.env.XPSR_SD,
    xpsr: v.xpsr ?? process.env.XPSR_WEIGHTS,
    model: v.model ?? process.env.XPSR_MODEL,
    variant: v.variant,
    sdConfig: v['sd-config'],
    device: v.device,
    threads: n('--threads', v.threads),
  };
  asUsage(() => {
    try {
      checkLoadOptions(load);
    } catch (e) {
      if (!load.model && !(load.sd && load.xpsr))
        throw new UsageError('the weights are needed: --sd DIR --xpsr DIR, or --model DIR (or env XPSR_SD / XPSR_WEIGHTS / XPSR_MODEL)');
      throw e;
    }
    resolveWeights(load); // folders, files or cached repo ids present (nothing is read yet)
  });
  const captioner = asUsage(() => captionerOptionsFromArgs(v));
  // Last, once everything else is known to be right: the output folder is created and must be writable.
  if (outputFolder !== undefined) {
    try {
      mkdirSync(outputFolder, { recursive: true });
      accessSync(outputFolder, constants.W_OK);
    } catch (e) {
      throw new UsageError(`cannot write to the output folder ${outputFolder} (${(e as NodeJS.ErrnoException).code ?? String(e)})`, 'ERR_IO');
    }
  }
  return { jobs, format, load, upscale, captioner, metadata: !v['no-metadata'] };
}

async function readStdin(): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of process.stdin) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

function writeStdout(data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(data, (e) => (e ? reject(e) : resolve())));
}

export async function runUpscaleCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseFlags('upscale', argv, OPTIONS, true);
  if (v.help) {
    process.stdout.write(UPSCALE_HELP);
    return EXIT.OK;
  }
  const plan = makePlan(v, positionals);
  const report = new ProgressReporter({ quiet: !!v.quiet, json: !!v.json, total: plan.jobs.length });

  // SIGINT / SIGTERM cancel the image in progress (a second one exits at once).
  const controller = new AbortController();
  let interrupted: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted !== undefined) process.exit(interrupted);
    interrupted = signal === 'SIGTERM' ? EXIT.TERMINATED : EXIT.INTERRUPTED;
    report.note(`xpsr: ${signal}: cancelling (again to exit at once)`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const stdinImage = plan.jobs[0]?.input === STDIO ? await readStdin() : undefined;
  let captioner: Awaited<ReturnType<typeof createCaptionerFromOptions>> | undefined;
  let xpsr: XPSR | undefined;
  const counts = { written: 0, skipped: 0, failed: 0, notRun: 0 };
  try {
    captioner = await createCaptionerFromOptions({ ...plan.captioner, signal: controller.signal });
    report.note('xpsr: loading models...');
    const t0 = performance.now();
    xpsr = await XPSR.load({ ...plan.load, captioner, onNotice: (m) => report.note(m) });
    const device = xpsr.device;
    report.loaded(device, xpsr.deviceDescription, performance.now() - t0);
    if (interrupted !== undefined) throw new XpsrError('ERR_CANCELLED', 'interrupted while loading');

    for (const [i, job] of plan.jobs.entries()) {
      if (interrupted !== undefined) {
        counts.notRun = plan.jobs.length - i;
        break;
      }
      if (job.skip) {
        counts.skipped++;
        report.skipped(i, job.input, job.output);
        continue;
      }
      report.start(i, show(job.input));
      let r: UpscaleResult;
      try {
        r = await xpsr.upscale(job.input === STDIO ? stdinImage! : job.input, {
          ...plan.upscale,
          name: job.input === STDIO ? 'stdin' : undefined,
          signal: controller.signal,
          onProgress: (e: ProgressEvent) => report.progress(i, show(job.input), e),
        });
        if (job.output === STDIO) await writeStdout(await r.toBuffer(plan.format, { metadata: plan.metadata }));
        else await r.toFile(job.output, { metadata: plan.metadata });
      } catch (e) {
        if (errorCode(e) === 'ERR_CANCELLED' && interrupted !== undefined) {
          counts.notRun = plan.jobs.length - i;
          report.cancelled(i, show(job.input));
          break;
        }
        counts.failed++;
        report.failed(i, show(job.input), e, describeError(e));
        continue;
      }
      counts.written++;
      report.done(i, show(job.input), job.output === STDIO ? '<stdout>' : job.output, r, device);
    }
    report.summary(counts, interrupted !== undefined, device);
  } catch (e) {
    if (interrupted === undefined) throw e;
    report.summary(counts, true, xpsr?.device);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await xpsr?.dispose();
    await captioner?.dispose();
  }
  if (interrupted !== undefined) return interrupted;
  return counts.failed ? EXIT.FAILED : EXIT.OK;
}
