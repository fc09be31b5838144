// ONNX export checked by an independent runtime: every network of the fixture model is exported from the
// engine's own graphs and run by onnxruntime (CPU), against the golden outputs of the official code
// (same tolerances as the native engine's parity), in both layouts, fp16, with a dynamic batch and with
// external weights; a full pipeline run on onnxruntime gives the native engine's pixels.
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { runParity } from '../dist/lib/parity/index.js';
import { onnxParityChecks } from '../dist/lib/onnx/parity.js';
import { exportOnnx } from '../dist/lib/onnx/export.js';
import { createOnnxPipeline, OnnxExport } from '../dist/lib/onnx/models.js';
import { readSafetensors, toFloat32 } from '../dist/lib/io/safetensors.js';
import { Engine } from '../dist/lib/engine/engine.js';
import { runCore } from '../dist/lib/pipeline/core.js';
import { TextConditioner } from '../dist/lib/pipeline/text.js';
import { ClipTokenizer } from '../dist/lib/tokenizer/index.js';
import { ReplayNoise } from '../dist/lib/noise.js';
import { fixtures, model, root } from './helpers/fixtures.mjs';

const tmp = (name) => mkdtempSync(path.join(tmpdir(), `xpsr-onnx-${name}-`));

const report = runParity(fixtures, { engine: 'onnxruntime' });

// Tensors compared per component (intermediates included), as the native parity run compares them.
const expected = {
  text_encoder: 4,
  vae_encoder: 8,
  vae_decoder: 6,
  controlnet: 54,
  unet: 54,
  unet_lowlevel_variant: 74,
  step: 10,
  pipeline_default: 45,
  pipeline_latents_input: 40,
};

for (const [component, min] of Object.entries(expected)) {
  test(`onnxruntime: exported ${component} matches the official outputs`, async (t) => {
    const r = await report;
    const lines = r.lines.filter((l) => l.component === component);
    t.true(lines.length >= min, `only ${lines.length} tensors compared for ${component}`);
    t.deepEqual(
      lines.filter((l) => !l.pass).map((l) => `${l.tensor}: max_abs ${l.maxAbs} > tol ${l.tol} ${l.note ?? ''}`),
      [],
    );
  });
}

test('onnxruntime: the whole parity run passes, skips nothing, and stays within float32 tolerance', async (t) => {
  const r = await report;
  t.is(r.failed, 0);
  t.deepEqual(r.skipped, []);
  const nets = r.lines.filter((l) => ['text_encoder', 'vae_encoder', 'vae_decoder', 'controlnet', 'unet', 'step'].includes(l.component));
  const worst = Math.max(...nets.map((l) => l.maxRel));
  t.true(worst < 1e-5, `worst max_abs/max|ref| ${worst}`);
});

/** Runs the ONNX checks of an export variant over the fixtures. */
async function variantLines(variant, tol, components) {
  const cache = new Map();
  const ctx = {
    dir: fixtures,
    tol,
    engine: async () => {
      throw new Error('not used');
    },
    read: (f) => cache.get(f) ?? (cache.set(f, readSafetensors(path.join(fixtures, f))), cache.get(f)),
  };
  const lines = [];
  for (const c of onnxParityChecks(variant)) if (components.includes(c.component)) lines.push(...(await c.run(ctx)));
  return lines;
}
const NETWORKS = ['text_encoder', 'vae_encoder', 'vae_decoder', 'controlnet', 'unet', 'unet_lowlevel_variant', 'step'];
const failures = (lines) => lines.filter((l) => !l.pass).map((l) => `${l.component} ${l.tensor}: ${l.maxAbs} > ${l.tol} ${l.note ?? ''}`);

test('onnxruntime: the channels-last layout (Transposes around Conv) passes the same checks, pipeline included', async (t) => {
  const lines = await variantLines({ layout: 'nhwc' }, 1e-4, [...NETWORKS, 'pipeline_default']);
  t.true(lines.length > 250);
  // Its GroupNorm statistics come from ReduceMean (not InstanceNormalization): a few more uint8 pixels
  // round the other way than the fixture's 0.1% allowance, none by more than 1.
  const u8 = lines.filter((l) => l.tensor.endsWith('_u8'));
  t.is(u8.length, 2);
  for (const l of u8) t.true(l.maxAbs <= 1, `${l.tensor}: ${l.note}`);
  t.deepEqual(failures(lines.filter((l) => !l.tensor.endsWith('_u8'))), []);
});

test('onnxruntime: a dynamic batch axis and external weights pass the same checks', async (t) => {
  const lines = await variantLines({ dynamicBatch: true, external: 'always' }, 1e-4, NETWORKS);
  t.true(lines.length > 200);
  t.deepEqual(failures(lines), []);
});

test('onnxruntime: fp16 export passes at the fp16 module tolerance (that of the CUDA backend)', async (t) => {
  const lines = await variantLines({ fp16: true }, 2e-2, NETWORKS);
  t.true(lines.length > 200);
  t.deepEqual(failures(lines), []);
  // and it really is fp16: half the weight bytes, float16 initializers
  const a = tmp('fp16');
  const b = tmp('fp32');
  try {
    const c = { vae: { path: path.join(model, 'vae') } };
    const m16 = await exportOnnx({ components: c, out: a, parts: ['vae_decoder'], sizes: [[64, 64]], fp16: true });
    const m32 = await exportOnnx({ components: c, out: b, parts: ['vae_decoder'], sizes: [[64, 64]] });
    t.is(m16.dtype, 'float16');
    // conv / linear weights in float16; norm scales and shifts stay float32
    t.true(m16.files[0].weightBytes < 0.51 * m32.files[0].weightBytes, `${m16.files[0].weightBytes} vs ${m32.files[0].weightBytes}`);
    t.deepEqual(m16.files[0].inputs[0].type, 'float32');
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

// ---- the pipeline on onnxruntime vs the native engine ------------------------------------------------

test("onnxruntime: a full pipeline run gives the native engine's pixels (max |d| <= 1 in uint8)", async (t) => {
  const f = readSafetensors(path.join(fixtures, 'pipeline_default.safetensors'));
  const lr = f.tensors.get('input.lr_image_u8');
  const [H, W] = lr.shape;
  const noises = [...f.tensors.keys()]
    .filter((k) => /^noise\.\d+$/.test(k))
    .sort()
    .map((k) => toFloat32(f.tensors.get(k)));
  const tokenizer = await ClipTokenizer.fromDirectory(path.join(model, 'tokenizer'));
  const schedulerConfig = JSON.parse(readFileSync(path.join(model, 'scheduler', 'scheduler_config.json'), 'utf8'));
  const options = () => ({
    steps: 4,
    guidanceScale: 4.5,
    conditioningScale: 0.8,
    scheduler: 'ddpm',
    addedPrompt: '',
    negativePrompt: 'blurry',
    lowLevelGuidance: 'official',
    longPrompts: 'truncate',
    init: 'lr',
    addedNoiseLevel: 800,
    colorFix: 'adain',
    tiling: { mode: 'off', tileSize: 320, overlap: 8, maxLatentPixels: 320 * 320 },
    vaeTiling: 'off',
    noise: new ReplayNoise(noises),
  });
  const prompts = { high: 'a red fox in fresh snow', low: 'noisy and blurry' };
  const engine = await Engine.create({ device: 'cpu' });
  const out = tmp('pipeline');
  try {
    const native = await runCore(
      {
        engine,
        text: new TextConditioner(tokenizer, await engine.loadTextEncoder(path.join(model, 'text_encoder'))),
        vae: await engine.loadVae(path.join(model, 'vae')),
        unet: await engine.loadUNet(path.join(model, 'unet')),
        controlnet: await engine.loadControlNet(path.join(model, 'controlnet')),
        schedulerConfig,
      },
      { rgb: lr.data, width: W, height: H },
      prompts,
      options(),
    );
    const c = (sub) => ({ path: path.join(model, sub) });
    await exportOnnx({
      components: { textEncoder: c('text_encoder'), vae: c('vae'), unet: c('unet'), controlnet: c('controlnet') },
      out,
      sizes: [[W, H]],
    });
    const onnx = createOnnxPipeline({ dir: out, tokenizer, schedulerConfig });
    const viaOrt = await runCore(onnx, { rgb: lr.data, width: W, height: H }, prompts, options());
    await onnx.onnx.release();
    for (const k of ['decoded', 'image']) {
      let worst = 0;
      for (let i = 0; i < native[k].length; i++) worst = Math.max(worst, Math.abs(native[k][i] - viaOrt[k][i]));
      t.true(worst <= 1, `${k}: max |d| ${worst}`);
    }
    t.deepEqual(viaOrt.timesteps, native.timesteps);
  } finally {
    engine.dispose();
    rmSync(out, { recursive: true, force: true });
  }
});

// ---- other configurations: synthetic weights, compared with the native engine -------------------------

const TRUNK = {
  in_channels: 4,
  block_out_channels: [32, 64, 64],
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  layers_per_block: 2,
  attention_head_dim: [1, 2, 4],
  cross_attention_dim: 24,
  norm_num_groups: 8,
  norm_eps: 1e-5,
  flip_sin_to_cos: true,
  freq_shift: 0,
};
const unetCfg = (low) => ({
  ...TRUNK,
  out_channels: 4,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  up_use_lowlevel_prompt: [false, low, low],
  mid_use_lowlevel_prompt: low,
  down_use_lowlevel_prompt: low,
});
const cnCfg = (rrdb) => ({ ...TRUNK, conditioning_embedding_out_channels: [8, 16, 16, 32], use_lowlevel_prompt: true, use_rrdb: rrdb });

function ramp(shape, scale, phase, offset = 0) {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = offset + scale * Math.sin(0.37 * i + phase);
  return { shape, data };
}
function maxRel(a, b) {
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / Math.max(1, m);
}

for (const [label, rrdb, low, layout] of [
  ['per-block heads, 2 layers per block, odd 9x7 latent', false, false, 'nchw'],
  ['RRDB preprocessor, UNet with SFA branches, nhwc', true, true, 'nhwc'],
]) {
  test(`onnxruntime: step of another config (${label}) matches the native engine`, async (t) => {
    const engine = await Engine.create({ device: 'cpu' });
    const out = tmp('config');
    try {
      const cn = await engine.loadSynthetic('controlnet', cnCfg(rrdb), 3);
      const un = await engine.loadSynthetic('unet', unetCfg(low), 4);
      const h = 9,
        w = 7,
        N = 2;
      const args = {
        sample: ramp([N, 4, h, w], 1, 0),
        timestep: 501,
        ctxHigh: ramp([N, 77, 24], 1, 1),
        ctxLow: ramp([N, 77, 24], 1, 2),
        image: ramp([N, 3, 8 * h, 8 * w], 0.25, 3, 0.5),
        conditioningScale: 0.7,
      };
      const ref = await engine.step(cn, un, args);
      const m = await exportOnnx({
        components: { controlnet: { config: cnCfg(rrdb), synthetic: true, seed: 3 }, unet: { config: unetCfg(low), synthetic: true, seed: 4 } },
        out,
        parts: ['step'],
        sizes: [[8 * w, 8 * h]],
        batch: N,
        layout,
      });
      t.deepEqual(
        m.files[0].inputs.map((i) => i.name),
        ['sample', 'timestep', 'encoder_hidden_states', 'lowlevel_encoder_hidden_states', 'controlnet_cond', 'conditioning_scale'],
      );
      const x = OnnxExport.open(out);
      const s = await x.session(m.files[0]);
      const r = await s.run({
        sample: args.sample,
        timestep: { shape: [N], data: new Float32Array(N).fill(501) },
        encoder_hidden_states: args.ctxHigh,
        lowlevel_encoder_hidden_states: args.ctxLow,
        controlnet_cond: args.image,
        conditioning_scale: { shape: [1], data: Float32Array.of(0.7) },
      });
      await x.release();
      t.deepEqual(r.noise_pred.shape, [N, 4, h, w]);
      const e = maxRel(r.noise_pred.data, ref.noisePred.data);
      t.true(e < 1e-4, `max_abs / max(1, max|ref|) = ${e}`);
    } finally {
      engine.dispose();
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('onnxruntime: VAE with layers_per_block 2 (odd latent) and a GELU CLIP with 4 heads match the native engine', async (t) => {
  const engine = await Engine.create({ device: 'cpu' });
  const out = tmp('vae-clip');
  try {
    const vaeCfg = { in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [32, 64], layers_per_block: 2, norm_num_groups: 16 };
    const clipCfg = {
      vocab_size: 100,
      hidden_size: 16,
      intermediate_size: 40,
      num_hidden_layers: 3,
      num_attention_heads: 4,
      max_position_embeddings: 20,
      hidden_act: 'gelu',
    };
    const vae = await engine.loadSynthetic('vae', vaeCfg, 5);
    const te = await engine.loadSynthetic('text_encoder', clipCfg, 6);
    const z = ramp([1, 4, 5, 3], 1, 0); // odd latent; this VAE has one up/downsampler
    const x = ramp([1, 3, 40, 24], 0.5, 1);
    const ids = BigInt64Array.from({ length: 2 * 20 }, (_, i) => BigInt((i * 7) % 100));
    const refDec = (await vae.decode(z)).image;
    const refEnc = (await vae.encode(x)).moments;
    const refTxt = (await te.encode(ids, [2, 20])).lastHiddenState;
    const m = await exportOnnx({
      components: { vae: { config: vaeCfg, synthetic: true, seed: 5 }, textEncoder: { config: clipCfg, synthetic: true, seed: 6 } },
      out,
      sizes: [[24, 40]],
      textBatch: 2,
      seqLen: 20,
    });
    const ox = OnnxExport.open(out);
    const run = async (part, feeds) => (await ox.session(m.files.find((f) => f.part === part))).run(feeds);
    const dec = (await run('vae_decoder', { latent: z })).image;
    const enc = (await run('vae_encoder', { image: x })).moments;
    const txt = (await run('text_encoder', { input_ids: { shape: [2, 20], ids } })).last_hidden_state;
    await ox.release();
    t.deepEqual(dec.shape, refDec.shape);
    t.true(maxRel(dec.data, refDec.data) < 1e-4, `decoder ${maxRel(dec.data, refDec.data)}`);
    t.true(maxRel(enc.data, refEnc.data) < 1e-4, `encoder ${maxRel(enc.data, refEnc.data)}`);
    t.true(maxRel(txt.data, refTxt.data) < 1e-4, `text ${maxRel(txt.data, refTxt.data)}`);
  } finally {
    engine.dispose();
    rmSync(out, { recursive: true, force: true });
  }
});

// ---- files, CLI and errors -------------------------------------------------------------------------------

test('xpsr export onnx writes every part per size and a manifest; external weights are shared by the sizes', async (t) => {
  const out = tmp('cli');
  try {
    const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');
    const r = spawnSync(process.execPath, [cli, 'export', 'onnx', '--model', model, '--out', out, '--size', '96x128,64', '--external', 'always'], {
      encoding: 'utf8',
    });
    t.is(r.status, 0, r.stderr);
    t.regex(r.stdout, /exported 7 files/);
    const files = readdirSync(out).sort();
    t.deepEqual(files, [
      'manifest.json',
      'step.onnx_data',
      'step_64x64.onnx',
      'step_96x128.onnx',
      'text_encoder.onnx',
      'text_encoder.onnx_data',
      'vae_decoder.onnx_data',
      'vae_decoder_64x64.onnx',
      'vae_decoder_96x128.onnx',
      'vae_encoder.onnx_data',
      'vae_encoder_64x64.onnx',
      'vae_encoder_96x128.onnx',
    ]);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    const steps = manifest.files.filter((f) => f.part === 'step');
    t.is(steps.length, 2);
    // the data file holds each weight once, not once per size
    t.true(statSync(path.join(out, 'step.onnx_data')).size < 1.05 * steps[0].weightBytes + 65536 * 4);
    t.true(statSync(path.join(out, 'step_64x64.onnx')).size < 1 << 20);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('xpsr parity --engine onnxruntime prints the usual lines and summary', (t) => {
  const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');
  const r = spawnSync(process.execPath, [cli, 'parity', '--engine', 'onnxruntime', '--fixtures', fixtures, '--only', 'text_encoder,vae_decoder'], {
    encoding: 'utf8',
  });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^PASS {2}text_encoder {11}last_hidden_state/m);
  t.regex(r.stdout, /\nparity: 10 passed, 0 failed\n$/);
});

test('export errors are coded and name the problem', async (t) => {
  const out = tmp('errors');
  try {
    const cn = { controlnet: { path: path.join(model, 'controlnet') } };
    await t.throwsAsync(exportOnnx({ components: cn, out: '' }), { code: 'ERR_INVALID_OPTION' });
    await t.throwsAsync(exportOnnx({ components: cn, out, parts: ['decoder'] }), { code: 'ERR_INVALID_OPTION', message: /unknown part 'decoder'/ });
    await t.throwsAsync(exportOnnx({ components: cn, out, sizes: [[100, 64]] }), { code: 'ERR_INVALID_OPTION', message: /multiples of 8/ });
    await t.throwsAsync(exportOnnx({ components: cn, out, parts: ['step'] }), {
      code: 'ERR_INVALID_ARGUMENT',
      message: /needs a ControlNet and a UNet/,
    });
    await t.throwsAsync(exportOnnx({ components: { unet: { path: path.join(out, 'nowhere') } }, out, parts: ['unet'] }), {
      code: 'ERR_WEIGHTS_MISSING',
    });
    t.throws(() => OnnxExport.open(path.join(out, 'nowhere')), { code: 'ERR_WEIGHTS_MISSING' });
    // a size that was not exported is refused with the sizes that were
    await exportOnnx({ components: { vae: { path: path.join(model, 'vae') } }, out, parts: ['vae_decoder'], sizes: [[64, 64]] });
    const pipe = createOnnxPipeline({ dir: out, tokenizer: await ClipTokenizer.fromDirectory(path.join(model, 'tokenizer')), schedulerConfig: {} });
    await t.throwsAsync(pipe.vae.decode(ramp([1, 4, 4, 4], 1, 0)), { code: 'ERR_UNSUPPORTED', message: /no 'vae_decoder' graph for 32x32.*64x64/ });
    await pipe.onnx.release();
    t.false(existsSync(path.join(out, 'step_64x64.onnx')));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
