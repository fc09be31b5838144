#!/usr/bin/env node
// CPU comparison of the CFG denoising step (ControlNet + UNet, batch 2, synthetic weights): our CPU
// backend against onnxruntime (CPU execution provider) running the exported step graph, same thread
// count, in the same process, one after the other. Prints JSON: per-run times of each, the ratio, and
// the time per op class (engine op that produced the ONNX nodes: conv2d, linear, attention, group_norm,
// ... and 'layout' for Transposes the export inserted) on both sides.
//
//   node scripts/bench-onnx.mjs [--config full|cut] [--size 256] [--threads 2] [--reps 2] [--layout nchw,nhwc]
//
// --config full: the released SD-1.5 UNet / XPSR ControlNet configs (about 5 GB of f32 weights per copy;
//   the native side and onnxruntime each hold one, plus the exporter while it writes: needs ~16 GB free).
// --config cut (default): the same networks cut to three levels of widths 320, 640, 640 (the released
//   first two widths; XPSR needs the last two equal) at the 1/1, 1/2, 1/4 resolutions, where most of the
//   step's work is: every op class of the full step at full width, for machines without that memory.
// Needs onnxruntime-node (a dev dependency) and the native addon.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { freemem, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { exportOnnx } = await import(path.join(root, 'dist/lib/onnx/export.js'));
const { loadNative } = await import(path.join(root, 'dist/lib/native.js'));
const ort = createRequire(import.meta.url)('onnxruntime-node');

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const config = arg('config', 'cut');
const size = Number(arg('size', '256'));
const threads = Number(arg('threads', '2'));
const reps = Number(arg('reps', '2'));
const layouts = arg('layout', 'nchw,nhwc').split(',');

// Released configs (native/bench/sd15_configs.h).
const TRUNK = {
  in_channels: 4,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  attention_head_dim: 8,
  cross_attention_dim: 768,
  norm_num_groups: 32,
  norm_eps: 1e-5,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
};
let unet = {
  ...TRUNK,
  out_channels: 4,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  up_use_lowlevel_prompt: [false, false, false, false],
  mid_use_lowlevel_prompt: false,
  down_use_lowlevel_prompt: false,
};
let controlnet = { ...TRUNK, conditioning_embedding_out_channels: [16, 32, 96, 256], use_lowlevel_prompt: true, use_rrdb: false };
if (config === 'cut') {
  const cut = { block_out_channels: [320, 640, 640], down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'] };
  unet = {
    ...unet,
    ...cut,
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    up_use_lowlevel_prompt: [false, false, false],
  };
  controlnet = { ...controlnet, ...cut };
} else if (config !== 'full') {
  throw new Error(`--config must be full or cut, got ${config}`);
}
const components = { controlnet: { config: controlnet, synthetic: true, seed: 1 }, unet: { config: unet, synthetic: true, seed: 2 } };
const nativeComponents = {
  controlnet: { configJson: JSON.stringify(controlnet), synthetic: true, seed: 1 },
  unet: { configJson: JSON.stringify(unet), synthetic: true, seed: 2 },
};

const h = size / 8;
const result = { config, image: `${size}x${size}`, latent: `${h}x${h}`, batch: 2, threads, reps, freeMemGiB: +(freemem() / 2 ** 30).toFixed(1) };

// 1. Our CPU backend: the exported step graph, planned and run per op.
const native = JSON.parse(await loadNative().profileOnnxStep({ components: nativeComponents, size: [size, size], batch: 2, threads, reps }));
result.native = {
  backend: native.backend,
  runsMs: native.runsMs.map((x) => +x.toFixed(1)),
  msByOp: round(native.msByOp),
  gflop: +(native.flops / 1e9).toFixed(1),
};

// 2. onnxruntime on the exported file, per layout.
result.onnxruntime = {};
for (const layout of layouts) {
  const out = mkdtempSync(path.join(tmpdir(), 'xpsr-bench-onnx-'));
  try {
    const m = await exportOnnx({ components, out, parts: ['step'], sizes: [[size, size]], batch: 2, layout });
    const s = await ort.InferenceSession.create(path.join(out, m.files[0].file), {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      enableProfiling: true,
      profileFilePrefix: path.join(out, 'profile'),
      logSeverityLevel: 3,
    });
    const N = 2;
    const fill = (shape, off = 0) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const d = new Float32Array(n);
      for (let i = 0; i < n; i++) d[i] = off + 0.5 * Math.sin(0.37 * i);
      return new ort.Tensor('float32', d, shape);
    };
    const feeds = {
      sample: fill([N, 4, h, h]),
      timestep: new ort.Tensor('float32', new Float32Array(N).fill(501), [N]),
      encoder_hidden_states: fill([N, 77, 768]),
      lowlevel_encoder_hidden_states: fill([N, 77, 768]),
      controlnet_cond: fill([N, 3, size, size], 0.5),
      conditioning_scale: new ort.Tensor('float32', Float32Array.of(1), [1]),
    };
    await s.run(feeds); // warm-up (profiled too; its share is removed below)
    const runs = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      await s.run(feeds);
      runs.push(performance.now() - t0);
    }
    s.endProfiling();
    await s.release();
    const prof = readdirSync(out).find((f) => f.startsWith('profile'));
    const byOp = {};
    if (prof) {
      for (const e of JSON.parse(readFileSync(path.join(out, prof), 'utf8'))) {
        if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
        // Node names are "<engine op>/<onnx op>_<n>"; nodes onnxruntime created while optimising (NCHWc
        // convolutions and their reorders, fused activations) keep no prefix: classed by their op type.
        const opType = e.args?.op_name ?? '';
        const cls = e.name.includes('/')
          ? e.name.split('/')[0]
          : /Conv/.test(opType)
            ? 'conv2d'
            : /Reorder|Transpose/.test(opType)
              ? 'layout'
              : /MatMul|Gemm/.test(opType)
                ? 'linear'
                : `other:${opType}`;
        byOp[cls] = (byOp[cls] ?? 0) + e.dur / 1000 / (reps + 1); // µs over reps + warm-up -> ms per run
      }
    }
    result.onnxruntime[layout] = { runsMs: runs.map((x) => +x.toFixed(1)), msByOp: round(byOp), nodes: m.files[0].nodes };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

// 3. Ratios (native / onnxruntime; > 1 means onnxruntime is faster), total and per op class.
const best = (a) => Math.min(...a);
result.ratio = {};
for (const layout of layouts) {
  const o = result.onnxruntime[layout];
  const perOp = {};
  for (const k of Object.keys(result.native.msByOp)) if (o.msByOp[k]) perOp[k] = +(result.native.msByOp[k] / o.msByOp[k]).toFixed(2);
  result.ratio[layout] = { step: +(best(result.native.runsMs) / best(o.runsMs)).toFixed(2), perOp };
}
result.note = 'ratio = native ms / onnxruntime ms (> 1: onnxruntime faster); shared 2-core machine: noisy, compare within one run';
process.stdout.write(JSON.stringify(result, null, 2) + '\n');

function round(o) {
  return Object.fromEntries(
    Object.entries(o)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => [k, +v.toFixed(1)]),
  );
}
