/**
 * `xpsr upscale <files or folders...> -o <file or folder> [options]`: loads the models once and runs
 * every image, with a progress bar per image and overall (stderr, TTY), or quiet / JSON-lines modes.
 */
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { XPSR } from '../xpsr.js';
import type { UpscaleOptions } from '../options.js';
import { createCaptionerFromOptions } from '../captioners/factory.js';
import { CAPTIONER_CLI_HELP, CAPTIONER_CLI_OPTIONS, captionerOptionsFromArgs, xpsrInstructionsFromArgs } from '../captioners/cli.js';
import type { ProgressEvent } from '../pipeline/core.js';

export const UPSCALE_HELP = `Usage: xpsr upscale <files or folders...> -o <file or folder> [options]

Weights (or env XPSR_SD / XPSR_WEIGHTS / XPSR_MODEL)
  --sd DIR|FILE|REPO_ID    Stable Diffusion 1.5: diffusers folder, single checkpoint file (.safetensors, .ckpt)
                           or a repo id in the local Hugging Face cache
  --xpsr DIR|REPO_ID       XPSR checkpoint folder (unet/, controlnet/)
  --model DIR              one folder holding all of the above
  --variant fp16           prefer the *.fp16.safetensors weights of a diffusers folder
  --sd-config DIR          tokenizer/, scheduler/ (and configs) for a single-file --sd
  --device auto|cpu|cuda|cuda:N   (default auto: CUDA when usable, else CPU)
  --threads N              CPU threads

Restoration (defaults = the official run)
  --scale N                output / input size (default 4)
  --process-size N         minimum short side the networks see (default 512)
  --steps N                denoising steps (default 20)
  --guidance G             classifier-free guidance scale (default 4.5; <= 1 disables CFG)
  --conditioning-scale S   ControlNet scale (default 1)
  --seed N                 noise seed (default random, printed)
  --scheduler ddpm|dpmpp|unipc     (default ddpm)
  --color-fix adain|wavelet|none   (default adain)
  --init lr|noise          start from the noised LR latent (default) or pure noise
  --tiling auto|on|off     latent tiling (default auto: above 320x320 latent pixels)
  --tile-size N, --tile-overlap N, --tile-max-pixels N
  --memory-budget-mb N     tile whenever a whole-latent step needs more activation memory than this
  --vae-tiling auto|on|off tiled VAE with whole-image GroupNorm statistics (default auto)
  --max-input-pixels N     refuse larger inputs (default 1048576 = 1 MP; a 1 MP input becomes 16 MP at x4)
  --long-prompts truncate|chunks   (default truncate = CLIP's 77 tokens, as official)
  --low-level-guidance official|paper

Captions (default: "" for both, as the official code with empty caption files; --prompt-dir DIR reads the
official layout DIR/highlevel_prompt/NAME.txt and DIR/lowlevel_prompt_q/NAME.txt)
${CAPTIONER_CLI_HELP}
Output
  -o, --output PATH        file (one input) or folder (created; NAME.<format>)
  --format png|jpg|webp|tiff   output format in a folder (default png)
  --overwrite              replace existing outputs (default: skip them)
  -q, --quiet              no progress
  --json                   JSON lines on stdout (progress and results)
  -h, --help
`;

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg', '.webp', '.bmp', '.gif', '.tif', '.tiff', '.avif']);

function expand(inputs: string[]): string[] {
  const out: string[] = [];
  for (const p of inputs) {
    let isDir = false;
    try {
      isDir = statSync(p).isDirectory();
    } catch {
      /* reported when decoded */
    }
    if (isDir) out.push(...readdirSync(p).filter((f) => IMAGE_EXT.has(path.extname(f).toLowerCase())).sort().map((f) => path.join(p, f)));
    else out.push(p);
  }
  return out;
}

function bar(frac: number, width = 24): string {
  const n = Math.round(Math.max(0, Math.min(1, frac)) * width);
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}]`;
}

export async function runUpscaleCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' }, sd: { type: 'string' }, xpsr: { type: 'string' }, model: { type: 'string' },
      variant: { type: 'string' }, 'sd-config': { type: 'string' },
      device: { type: 'string' }, threads: { type: 'string' }, scale: { type: 'string' }, 'process-size': { type: 'string' }, steps: { type: 'string' },
      guidance: { type: 'string' }, 'conditioning-scale': { type: 'string' }, seed: { type: 'string' }, scheduler: { type: 'string' },
      'color-fix': { type: 'string' }, init: { type: 'string' }, tiling: { type: 'string' }, 'tile-size': { type: 'string' },
      'tile-overlap': { type: 'string' }, 'tile-max-pixels': { type: 'string' }, 'memory-budget-mb': { type: 'string' }, 'vae-tiling': { type: 'string' }, 'max-input-pixels': { type: 'string' },
      'long-prompts': { type: 'string' }, 'low-level-guidance': { type: 'string' },
      ...CAPTIONER_CLI_OPTIONS,
      format: { type: 'string' }, overwrite: { type: 'boolean' }, quiet: { type: 'boolean', short: 'q' }, json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    process.stdout.write(UPSCALE_HELP);
    return 0;
  }
  const inputs = expand(positionals);
  if (inputs.length === 0) throw new Error('xpsr upscale: no input images (see --help)');
  if (!v.output) throw new Error('xpsr upscale: -o <file or folder> is required');
  const num = (name: string, s: string | undefined) => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!Number.isFinite(n)) throw new Error(`--${name} expects a number, got '${s}'`);
    return n;
  };
  const format = v.format ?? 'png';
  const outIsFile = inputs.length === 1 && path.extname(v.output) !== '' && !(statSafe(v.output)?.isDirectory() ?? false);
  if (!outIsFile) mkdirSync(v.output, { recursive: true });
  const target = (input: string) => (outIsFile ? v.output! : path.join(v.output!, `${path.parse(input).name}.${format}`));

  const quiet = v.quiet || v.json;
  const tty = process.stderr.isTTY && !quiet;
  const log = (s: string) => !quiet && process.stderr.write(s);
  const json = (o: object) => v.json && process.stdout.write(JSON.stringify(o) + '\n');

  const controller = new AbortController();
  const onSig = () => controller.abort();
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);

  const captioner = await createCaptionerFromOptions({ ...captionerOptionsFromArgs(v), signal: controller.signal });
  log('xpsr: loading models...\n');
  const t0 = performance.now();
  const xpsr = await XPSR.load({
    sd: v.sd ?? process.env.XPSR_SD, xpsr: v.xpsr ?? process.env.XPSR_WEIGHTS, model: v.model ?? process.env.XPSR_MODEL,
    variant: v.variant, sdConfig: v['sd-config'],
    device: v.device, threads: num('threads', v.threads), captioner, onNotice: (m) => log(m + '\n'),
  });
  log(`xpsr: models loaded on ${xpsr.device} (${xpsr.deviceDescription}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  json({ event: 'loaded', device: xpsr.device, ms: performance.now() - t0 });

  const opts: UpscaleOptions = {
    scale: num('scale', v.scale), processSize: num('process-size', v['process-size']), steps: num('steps', v.steps), guidanceScale: num('guidance', v.guidance),
    conditioningScale: num('conditioning-scale', v['conditioning-scale']), seed: num('seed', v.seed),
    scheduler: v.scheduler, colorFix: v['color-fix'] as UpscaleOptions['colorFix'], init: v.init as UpscaleOptions['init'],
    longPrompts: v['long-prompts'] as UpscaleOptions['longPrompts'],
    lowLevelGuidance: v['low-level-guidance'] as UpscaleOptions['lowLevelGuidance'],
    maxInputPixels: num('max-input-pixels', v['max-input-pixels']),
    vaeTiling: v['vae-tiling'] as UpscaleOptions['vaeTiling'],
    tiling: {
      mode: (v.tiling ?? 'auto') as 'auto' | 'on' | 'off', tileSize: num('tile-size', v['tile-size']),
      overlap: num('tile-overlap', v['tile-overlap']), maxLatentPixels: num('tile-max-pixels', v['tile-max-pixels']),
      memoryBudgetMB: num('memory-budget-mb', v['memory-budget-mb']),
    },
    instructions: xpsrInstructionsFromArgs(v),
    signal: controller.signal,
  };
  let failed = 0;
  try {
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i];
      const out = target(input);
      if (!v.overwrite && statSafe(out)) {
        log(`xpsr: ${out} exists, skipping (use --overwrite)\n`);
        json({ event: 'skipped', input, output: out });
        continue;
      }
      const overall = (i: number, frac: number) => (i + frac) / inputs.length;
      try {
        const r = await xpsr.upscale(input, {
          ...opts,
          onProgress: (e: ProgressEvent) => {
            const frac = e.stage === 'denoise' ? e.step / e.total : e.stage === 'decode' || e.stage === 'colorfix' ? 1 : 0;
            if (tty)
              process.stderr.write(`\r${path.basename(input).slice(0, 24).padEnd(24)} ${bar(frac)} ${e.stage.padEnd(8)} ${e.stage === 'denoise' ? `${e.step}/${e.total}` : ''}` +
                `  all ${bar(overall(i, frac), 12)} ${i + 1}/${inputs.length}   `);
            json({ event: 'progress', input, ...e });
          },
        });
        await r.toFile(out);
        if (tty) process.stderr.write('\n');
        log(`xpsr: ${input} -> ${out} (${r.width}x${r.height}, seed ${r.seed}, ${(r.timingsMs.total / 1000).toFixed(1)} s)\n`);
        json({ event: 'done', input, output: out, width: r.width, height: r.height, seed: r.seed, prompts: r.prompts, timingsMs: r.timingsMs });
      } catch (e) {
        if (tty) process.stderr.write('\n');
        const err = e as { code?: string; message?: string };
        if (err.code === 'ERR_CANCELLED') throw e;
        failed++;
        process.stderr.write(`xpsr: ${input}: ${err.message}${err.code ? ` [${err.code}]` : ''}\n`);
        json({ event: 'error', input, code: err.code, message: err.message });
      }
    }
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
    await xpsr.dispose();
    await captioner.dispose();
  }
  return failed ? 1 : 0;
}

function statSafe(p: string) {
  try {
    return statSync(p);
  } catch {
    return undefined;
  }
}
