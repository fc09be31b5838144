/**
 * `xpsr bench`: images per second and latency of the whole pipeline for several batch sizes in one run,
 * on real weights or on synthetic ones (the real SD-1.5 + XPSR configs with random values). For each batch
 * size B the instance batches up to B concurrent upscale() calls (lib/batch); `--concurrency` callers (B by
 * default) keep calls in flight until `--images` have finished. Throughput ratios are against batch 1 of
 * the same run. Speeds are measured here, never asserted by tests.
 */
import os from 'node:os';
import sharp from 'sharp';
import { makeDemoComponents } from '../demo/model.js';
import { makeSyntheticComponents } from '../bench/synthetic.js';
import { percentile } from '../bench/stats.js';
import { cudaMemory } from '../engine/device-memory.js';
import { XPSR, type UpscaleResult } from '../xpsr.js';
import { EXIT, UsageError, choiceFlag, numberFlag, parseFlags } from './common.js';

export const BENCH_HELP = `Usage: xpsr bench --synthetic [options]
       xpsr bench --sd DIR --xpsr DIR [options]    (or --model DIR)

Measures the pipeline (text, VAE encode, ControlNet + UNet steps, VAE decode, colour fix) on one
generated picture, for each batch size of --batch, in one run: images/s, the ratio to batch 1,
latency p50/p95/p99 per call, time per stage, memory.

Model
  --synthetic              the real SD-1.5 + XPSR network sizes with random weights (no files needed;
                           7.4 GiB of fp32 weights, about a minute to generate on a 2-core CPU)
  --synthetic-model M      sd15 (default) | demo (the tiny networks of xpsr demo: checks the bench itself)
  --sd DIR, --xpsr DIR     real weights (as xpsr upscale); --model DIR for one folder with all components
  --device D               auto | cpu | cuda | cuda:N (default auto)
  --threads N              CPU backend threads

Workload
  --latent N               latent side: the processed image is 8N x 8N pixels (default 64 = 512x512)
  --size WxH               processed image size instead (multiples of 8)
  --steps N                denoising steps (default 20)
  --guidance G             guidance scale (default 4.5; <= 1: no CFG, one row per image)
  --batch LIST             batch sizes to compare, e.g. 1,2,4 (default 1)
  --images N               measured calls per batch size (default 2 x the largest batch)
  --concurrency N          calls in flight (default: the batch size)
  --warmup N               calls per batch size run first, not measured (plans are built; default: the batch size)
  --delay-ms MS            batching delay (maxDelayMs; default 0)

Output
  --json                   one JSON document on stdout instead of the table
  -h, --help
`;

export interface BenchRow {
  batch: number;
  concurrency: number;
  images: number;
  wallMs: number;
  imagesPerSec: number;
  /** imagesPerSec / that of batch 1 in the same run (null without a batch-1 row). */
  ratioVsBatch1: number | null;
  latencyMs: { mean: number; p50: number; p95: number; p99: number };
  /** Wall time of each stage per batch, averaged over the calls (a batch's stages are shared by its images). */
  stagesMs: Record<'text' | 'encode' | 'denoise' | 'decode' | 'colorfix', number>;
  /** Batches run, and the mean images per batch actually formed. */
  batches: number;
  meanBatchSize: number;
  memory: {
    /** Activation arena of the largest plan used (step or VAE), from the engine's plan cache. */
    largestPlanBytes: number;
    /** Weights + largest plan: the device memory a call needs by the plans. */
    plannedPeakBytes: number;
    /** CUDA: device memory in use (total - free, every process), highest sample during the row; else null. */
    deviceUsedPeakBytes: number | null;
  };
}

export interface BenchReport {
  tool: 'xpsr bench';
  model: string;
  device: string;
  deviceDescription: string;
  host: { cpu: string; cores: number; memoryBytes: number; platform: string; node: string };
  width: number;
  height: number;
  latent: [number, number];
  steps: number;
  guidanceScale: number;
  loadMs: number;
  weightBytes: number;
  /** Peak resident memory of this process (host), at the end. */
  hostPeakRssBytes: number;
  rows: BenchRow[];
}

function listFlag(flag: string, s: string | undefined, def: number[]): number[] {
  if (s === undefined) return def;
  const xs = s.split(',').map((x) => numberFlag(flag, x.trim(), true)!);
  if (xs.some((x) => x < 1 || x > 64)) throw new UsageError(`${flag} expects batch sizes between 1 and 64, got '${s}'`);
  return [...new Set(xs)].sort((a, b) => a - b);
}

function positiveInt(flag: string, s: string | undefined, def: number, min = 1): number {
  const n = numberFlag(flag, s, true);
  if (n === undefined) return def;
  if (n < min) throw new UsageError(`${flag} expects an integer >= ${min}, got '${s}'`);
  return n;
}

/** CUDA device memory in use now (bytes), or null on the CPU. */
function cudaUsed(device: string): number | null {
  const m = cudaMemory(device);
  return m ? m.total - m.free : null;
}

export async function runBenchCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('bench', argv, {
    synthetic: { type: 'boolean' },
    'synthetic-model': { type: 'string' },
    sd: { type: 'string' },
    xpsr: { type: 'string' },
    model: { type: 'string' },
    device: { type: 'string' },
    threads: { type: 'string' },
    latent: { type: 'string' },
    size: { type: 'string' },
    steps: { type: 'string' },
    guidance: { type: 'string' },
    batch: { type: 'string' },
    images: { type: 'string' },
    concurrency: { type: 'string' },
    warmup: { type: 'string' },
    'delay-ms': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) {
    process.stdout.write(BENCH_HELP);
    return EXIT.OK;
  }
  const real = v.sd !== undefined || v.xpsr !== undefined || v.model !== undefined;
  if (Boolean(v.synthetic) === real) throw new UsageError('bench: give --synthetic, or real weights with --sd and --xpsr (or --model)');
  const syntheticModel = choiceFlag('--synthetic-model', v['synthetic-model'], ['sd15', 'demo'] as const) ?? 'sd15';
  let width: number;
  let height: number;
  if (v.size !== undefined) {
    const m = /^(\d+)x(\d+)$/.exec(v.size);
    if (!m || Number(m[1]) % 8 || Number(m[2]) % 8 || Math.min(Number(m[1]), Number(m[2])) < 64)
      throw new UsageError(`--size expects WxH with multiples of 8, the short side at least 64, got '${v.size}'`);
    [width, height] = [Number(m[1]), Number(m[2])];
  } else {
    const n = positiveInt('--latent', v.latent, 64, 8);
    [width, height] = [8 * n, 8 * n];
  }
  const steps = positiveInt('--steps', v.steps, 20);
  const guidanceScale = numberFlag('--guidance', v.guidance) ?? 4.5;
  const batches = listFlag('--batch', v.batch, [1]);
  const images = positiveInt('--images', v.images, 2 * batches[batches.length - 1]);
  const delayMs = positiveInt('--delay-ms', v['delay-ms'], 0, 0);
  const threads = numberFlag('--threads', v.threads, true);
  const say = (s: string) => process.stderr.write(`xpsr bench: ${s}\n`);

  const t0 = performance.now();
  const load = { device: v.device ?? 'auto', threads, onNotice: (m: string) => say(m) };
  say(real ? 'loading the weights...' : `generating synthetic ${syntheticModel === 'sd15' ? 'SD-1.5 + XPSR' : 'demo'} weights...`);
  const xpsr = real
    ? await XPSR.load({ ...load, sd: v.sd, xpsr: v.xpsr, model: v.model })
    : await XPSR.loadFrom(load, syntheticModel === 'sd15' ? (e) => makeSyntheticComponents(e) : makeDemoComponents);
  const loadMs = performance.now() - t0;
  try {
    // A generated picture of exactly the processed size (scale 1): every call has the same work.
    const raw = Buffer.alloc(width * height * 3);
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        const i = 3 * (y * width + x);
        raw[i] = (x * 255) / width;
        raw[i + 1] = (y * 255) / height;
        raw[i + 2] = ((x ^ y) * 7) & 255;
      }
    const picture = await sharp(raw, { raw: { width, height, channels: 3 } })
      .png()
      .toBuffer();
    const options = {
      steps,
      guidanceScale,
      scale: 1,
      processSize: Math.min(width, height),
      prompts: { high: 'a photograph of a street with houses and trees', low: 'blurry, noisy, low resolution' },
      tiling: { mode: 'off' as const },
      vaeTiling: 'off' as const,
    };
    say(`${xpsr.device} (${xpsr.deviceDescription}); ${width}x${height} (latent ${height / 8}x${width / 8}), ${steps} steps`);

    const rows: BenchRow[] = [];
    for (const batch of batches) {
      const concurrency = positiveInt('--concurrency', v.concurrency, batch);
      const warmup = positiveInt('--warmup', v.warmup, batch, 0);
      xpsr.setBatching({ maxBatch: batch, maxDelayMs: delayMs });
      let seed = 0;
      /** `count` calls, `concurrency` in flight; their latencies and results. */
      const drive = async (count: number, sample?: () => void) => {
        const latencies: number[] = [];
        const results: UpscaleResult[] = [];
        let next = 0;
        const caller = async () => {
          while (next < count) {
            next++;
            const ts = performance.now();
            const r = await xpsr.upscale(picture, { ...options, seed: seed++ });
            latencies.push(performance.now() - ts);
            results.push(r);
            sample?.();
          }
        };
        await Promise.all(Array.from({ length: Math.min(concurrency, count) }, caller));
        return { latencies, results };
      };
      if (warmup > 0) {
        say(`batch ${batch}: warm-up (${warmup} calls)...`);
        await drive(warmup);
      }
      say(`batch ${batch}: ${images} calls, ${concurrency} in flight...`);
      let devicePeak = cudaUsed(xpsr.device);
      const sampler = setInterval(() => {
        const u = cudaUsed(xpsr.device);
        if (u !== null) devicePeak = Math.max(devicePeak ?? 0, u);
      }, 50);
      const before = xpsr.queueStats();
      const ts = performance.now();
      let run: Awaited<ReturnType<typeof drive>>;
      try {
        run = await drive(images);
      } finally {
        clearInterval(sampler);
      }
      const wallMs = performance.now() - ts;
      const after = xpsr.queueStats();
      const lat = [...run.latencies].sort((a, b) => a - b);
      const mean = (f: (r: UpscaleResult) => number) => run.results.reduce((n, r) => n + f(r), 0) / run.results.length;
      const mem = xpsr.memoryStats();
      rows.push({
        batch,
        concurrency,
        images,
        wallMs,
        imagesPerSec: (1000 * images) / wallMs,
        ratioVsBatch1: null,
        latencyMs: {
          mean: lat.reduce((a, b) => a + b, 0) / lat.length,
          p50: percentile(lat, 50),
          p95: percentile(lat, 95),
          p99: percentile(lat, 99),
        },
        stagesMs: {
          text: mean((r) => r.timingsMs.text),
          encode: mean((r) => r.timingsMs.encode),
          denoise: mean((r) => r.timingsMs.denoise),
          decode: mean((r) => r.timingsMs.decode),
          colorfix: mean((r) => r.timingsMs.colorfix),
        },
        batches: after.batches - before.batches,
        meanBatchSize: mean((r) => r.batchSize),
        memory: { largestPlanBytes: mem.largestPlanBytes, plannedPeakBytes: mem.weightBytes + mem.largestPlanBytes, deviceUsedPeakBytes: devicePeak },
      });
    }
    const base = rows.find((r) => r.batch === 1);
    for (const r of rows) r.ratioVsBatch1 = base ? r.imagesPerSec / base.imagesPerSec : null;

    const report: BenchReport = {
      tool: 'xpsr bench',
      model: real
        ? [v.sd, v.xpsr, v.model].filter(Boolean).join(' + ')
        : `synthetic ${syntheticModel === 'sd15' ? 'SD-1.5 + XPSR' : 'demo'} (random weights)`,
      device: xpsr.device,
      deviceDescription: xpsr.deviceDescription,
      host: {
        cpu: os.cpus()[0]?.model ?? 'unknown',
        cores: os.availableParallelism(),
        memoryBytes: os.totalmem(),
        platform: `${os.platform()} ${os.arch()}`,
        node: process.version,
      },
      width,
      height,
      latent: [height / 8, width / 8],
      steps,
      guidanceScale,
      loadMs,
      weightBytes: xpsr.memoryStats().weightBytes,
      hostPeakRssBytes: process.resourceUsage().maxRSS * 1024,
      rows,
    };
    process.stdout.write(v.json ? `${JSON.stringify(report, null, 2)}\n` : benchTable(report));
  } finally {
    await xpsr.dispose();
  }
  return EXIT.OK;
}

const MiB = 2 ** 20;

/** The report as the table `xpsr bench` prints. */
export function benchTable(r: BenchReport): string {
  const head = [
    'batch',
    'conc',
    'images',
    'img/s',
    'x b1',
    'p50 ms',
    'p95 ms',
    'p99 ms',
    'text',
    'encode',
    'denoise',
    'decode',
    'colorfix',
    'plan MiB',
    'peak MiB',
  ];
  const lines = r.rows.map((x) => [
    String(x.batch),
    String(x.concurrency),
    String(x.images),
    x.imagesPerSec.toFixed(3),
    x.ratioVsBatch1 === null ? '-' : `${x.ratioVsBatch1.toFixed(2)}x`,
    x.latencyMs.p50.toFixed(0),
    x.latencyMs.p95.toFixed(0),
    x.latencyMs.p99.toFixed(0),
    ...(['text', 'encode', 'denoise', 'decode', 'colorfix'] as const).map((k) => x.stagesMs[k].toFixed(0)),
    (x.memory.largestPlanBytes / MiB).toFixed(0),
    ((x.memory.deviceUsedPeakBytes ?? x.memory.plannedPeakBytes) / MiB).toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join('  ');
  return [
    `xpsr bench: ${r.model} on ${r.device} (${r.deviceDescription})`,
    `host: ${r.host.cpu}, ${r.host.cores} threads; ${r.width}x${r.height} (latent ${r.latent[0]}x${r.latent[1]}), ${r.steps} steps, guidance ${r.guidanceScale}; load ${(r.loadMs / 1000).toFixed(1)} s`,
    'stage columns: ms per batch (shared by its images); peak MiB: device memory in use (CUDA) or weights + largest plan (CPU)',
    fmt(head),
    ...lines.map(fmt),
    `weights ${(r.weightBytes / MiB).toFixed(0)} MiB; host peak RSS ${(r.hostPeakRssBytes / MiB).toFixed(0)} MiB`,
    '',
  ].join('\n');
}
