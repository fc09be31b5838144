/**
 * `xpsr parity --fixtures DIR`: reproduces golden outputs of the official XPSR implementation stored in
 * DIR (layout of the project's fixtures: `model/<component>/` weights + configs, `<component>.safetensors`
 * inputs and expected outputs) and reports one line per compared tensor. Every component whose files are
 * present is checked; the rest are listed as absent. Works for any config in that format.
 */
import { XpsrError } from '../errors.js';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { readSafetensors, toFloat32, type SafetensorsFile, type Tensor as StTensor } from '../io/safetensors.js';
import { Engine, type Tensor } from '../engine/engine.js';
import { compareFloat, type ParityLine } from './compare.js';
import { pipelineChecks } from './pipeline-checks.js';
import { singleFileChecks } from './single-file-checks.js';

export { formatLine, type ParityLine } from './compare.js';

export interface ParityOptions {
  /** Device for the networks (default 'cpu': the fixtures are float32 references). */
  device?: string;
  /** Called for each line as soon as it is known. */
  onLine?: (line: ParityLine) => void;
  /** Called for components skipped because their files are absent. */
  onSkip?: (component: string, reason: string) => void;
  /** Only run these components (names as printed). */
  only?: string[];
  /** Relative tolerance for single networks (default 1e-4, or 2e-2 on a CUDA device: fp16 storage). */
  moduleTolerance?: number;
  /** 'native' (default) or 'onnxruntime': export the fixture model to ONNX and check the exported networks (lib/onnx). */
  engine?: 'native' | 'onnxruntime';
}

export interface ParityReport {
  passed: number;
  failed: number;
  /** Reference tensors knowingly not computed (training-only heads), listed as SKIP lines. */
  notComputed: number;
  lines: ParityLine[];
  skipped: { component: string; reason: string }[];
}

/** A check: needs some files in DIR, then yields comparison lines. */
export interface ParityCheck {
  component: string;
  files: string[];
  run(ctx: ParityContext): Promise<ParityLine[]>;
}

export interface ParityContext {
  dir: string;
  engine: () => Promise<Engine>;
  tol: number;
  read(file: string): SafetensorsFile;
}

export function asTensor(t: StTensor | undefined, name = 'tensor'): Tensor {
  if (!t) throw new XpsrError('ERR_WEIGHTS_MISSING', `fixture tensor '${name}' is missing`);
  return { shape: t.shape, data: toFloat32(t) };
}

function get(f: SafetensorsFile, key: string): StTensor {
  const t = f.tensors.get(key);
  if (!t) throw new XpsrError('ERR_WEIGHTS_MISSING', `fixture tensor '${key}' is missing`);
  return t;
}

/** Compares every engine output that has a same-named reference tensor in `ref`. */
function compareOutputs(component: string, outputs: Record<string, Tensor>, ref: SafetensorsFile, tol: number): ParityLine[] {
  const lines: ParityLine[] = [];
  for (const [name, t] of Object.entries(outputs).sort(([a], [b]) => a.localeCompare(b))) {
    const r = ref.tensors.get(name);
    if (!r) continue;
    lines.push(compareFloat(component, name, t.data, toFloat32(r), tol));
  }
  return lines;
}

/** Reference tensors the engine knowingly does not compute (training-only heads). */
function notComputed(component: string, ref: SafetensorsFile, prefixes: string[]): ParityLine[] {
  return [...ref.tensors.keys()]
    .filter((k) => prefixes.some((p) => k.startsWith(p)))
    .map((k) => ({
      component,
      tensor: k,
      maxAbs: NaN,
      maxRel: NaN,
      tol: 0,
      pass: false,
      skipped: true,
      note: 'training-only head, not computed (docs/architecture.md §5bis)',
    }));
}

const TRAINING_ONLY = ['degradation_rgb', 'controlnet_cond_rgbs.', 'inter.controlnet_cond_embedding.1.'];

async function controlnetOutputs(ctx: ParityContext, inputs: SafetensorsFile) {
  const engine = await ctx.engine();
  const cn = await engine.loadControlNet(path.join(ctx.dir, 'model', 'controlnet'));
  try {
    const scale = Number(inputs.metadata.conditioning_scale ?? '1');
    const r = await cn.forward(
      {
        sample: asTensor(get(inputs, 'input.sample')),
        timestep: Number(toFloat32(get(inputs, 'input.timestep'))[0]),
        ctxHigh: asTensor(get(inputs, 'input.encoder_hidden_states')),
        ctxLow: asTensor(get(inputs, 'input.lowlevel_encoder_hidden_states')),
        image: asTensor(get(inputs, 'input.controlnet_cond')),
        conditioningScale: Number.isFinite(scale) ? scale : 1,
      },
      { intermediates: true },
    );
    const outputs: Record<string, Tensor> = { ...r.intermediates, mid_block_res_sample: r.mid };
    r.down.forEach((t, k) => (outputs[`down_block_res_samples.${String(k).padStart(2, '0')}`] = t));
    return outputs;
  } finally {
    cn.unload();
  }
}

async function unetOutputs(ctx: ParityContext, modelDir: string, inputs: SafetensorsFile) {
  const engine = await ctx.engine();
  const unet = await engine.loadUNet(path.join(ctx.dir, 'model', modelDir));
  try {
    const down = [...inputs.tensors.keys()]
      .filter((k) => k.startsWith('input.down_block_additional_residuals.'))
      .sort()
      .map((k) => asTensor(inputs.tensors.get(k)));
    const r = await unet.forward(
      {
        sample: asTensor(get(inputs, 'input.sample')),
        timestep: Number(toFloat32(get(inputs, 'input.timestep'))[0]),
        ctxHigh: asTensor(get(inputs, 'input.encoder_hidden_states')),
        ctxLow: inputs.tensors.has('input.lowlevel_encoder_hidden_states')
          ? asTensor(get(inputs, 'input.lowlevel_encoder_hidden_states'))
          : undefined,
        down,
        mid: asTensor(get(inputs, 'input.mid_block_additional_residual')),
      },
      { intermediates: true },
    );
    return { ...r.intermediates, sample_out: r.sample };
  } finally {
    unet.unload();
  }
}

export const engineChecks: ParityCheck[] = [
  {
    component: 'text_encoder',
    files: ['text_encoder.safetensors', 'model/text_encoder/config.json'],
    async run(ctx) {
      const f = ctx.read('text_encoder.safetensors');
      const ids = get(f, 'input_ids');
      const te = await (await ctx.engine()).loadTextEncoder(path.join(ctx.dir, 'model', 'text_encoder'));
      try {
        const r = await te.encode(ids.data as BigInt64Array, [ids.shape[0], ids.shape[1]], { intermediates: true });
        return compareOutputs('text_encoder', { ...r.intermediates, last_hidden_state: r.lastHiddenState }, f, ctx.tol);
      } finally {
        te.unload();
      }
    },
  },
  {
    component: 'vae_encoder',
    files: ['vae_encoder.safetensors', 'model/vae/config.json'],
    async run(ctx) {
      const f = ctx.read('vae_encoder.safetensors');
      const vae = await (await ctx.engine()).loadVae(path.join(ctx.dir, 'model', 'vae'), { decoder: false });
      try {
        const r = await vae.encode(asTensor(get(f, 'x')), { intermediates: true });
        return compareOutputs('vae_encoder', { ...r.intermediates, moments: r.moments }, f, ctx.tol);
      } finally {
        vae.unload();
      }
    },
  },
  {
    component: 'vae_decoder',
    files: ['vae_decoder.safetensors', 'model/vae/config.json'],
    async run(ctx) {
      const f = ctx.read('vae_decoder.safetensors');
      const vae = await (await ctx.engine()).loadVae(path.join(ctx.dir, 'model', 'vae'), { encoder: false });
      try {
        const r = await vae.decode(asTensor(get(f, 'z')), { intermediates: true });
        return compareOutputs('vae_decoder', { ...r.intermediates, image: r.image }, f, ctx.tol);
      } finally {
        vae.unload();
      }
    },
  },
  {
    component: 'controlnet',
    files: ['controlnet.safetensors', 'model/controlnet/config.json'],
    async run(ctx) {
      const f = ctx.read('controlnet.safetensors');
      const out = await controlnetOutputs(ctx, f);
      const lines = compareOutputs('controlnet', out, f, ctx.tol);
      if (existsSync(path.join(ctx.dir, 'controlnet_intermediates.safetensors'))) {
        const inter = ctx.read('controlnet_intermediates.safetensors');
        lines.push(...compareOutputs('controlnet', out, inter, ctx.tol), ...notComputed('controlnet', inter, TRAINING_ONLY));
      }
      return [...lines, ...notComputed('controlnet', f, TRAINING_ONLY)];
    },
  },
  {
    component: 'unet',
    files: ['unet.safetensors', 'model/unet/config.json'],
    async run(ctx) {
      const f = ctx.read('unet.safetensors');
      const out = await unetOutputs(ctx, 'unet', f);
      const lines = compareOutputs('unet', out, f, ctx.tol);
      if (existsSync(path.join(ctx.dir, 'unet_intermediates.safetensors')))
        lines.push(...compareOutputs('unet', out, ctx.read('unet_intermediates.safetensors'), ctx.tol));
      return lines;
    },
  },
  {
    component: 'unet_lowlevel_variant',
    files: ['unet_lowlevel_variant.safetensors', 'model/unet_lowlevel_variant/config.json'],
    async run(ctx) {
      const f = ctx.read('unet_lowlevel_variant.safetensors');
      return compareOutputs('unet_lowlevel_variant', await unetOutputs(ctx, 'unet_lowlevel_variant', f), f, ctx.tol);
    },
  },
];

/** Runs every check whose files are present in `dir`. */
export async function runParity(dir: string, options: ParityOptions = {}): Promise<ParityReport> {
  if (!existsSync(dir)) throw new XpsrError('ERR_INVALID_OPTION', `fixtures folder not found: ${dir}`, { option: 'fixtures' });
  const device = options.device ?? 'cpu';
  let engine: Engine | undefined;
  const cache = new Map<string, SafetensorsFile>();
  const ctx: ParityContext = {
    dir,
    tol: options.moduleTolerance ?? (device.startsWith('cuda') ? 2e-2 : 1e-4),
    engine: async () => (engine ??= await Engine.create({ device })),
    read(file) {
      let f = cache.get(file);
      if (!f) cache.set(file, (f = readSafetensors(path.join(dir, file))));
      return f;
    },
  };
  const report: ParityReport = { passed: 0, failed: 0, notComputed: 0, lines: [], skipped: [] };
  try {
    const checks =
      options.engine === 'onnxruntime' ? (await import('../onnx/parity.js')).onnxChecks : [...engineChecks, ...singleFileChecks, ...pipelineChecks];
    for (const check of checks) {
      if (options.only && !options.only.includes(check.component)) continue;
      const missing = check.files.filter((f) => !existsSync(path.join(dir, f)));
      if (missing.length) {
        const reason = `absent: ${missing.join(', ')}`;
        report.skipped.push({ component: check.component, reason });
        options.onSkip?.(check.component, reason);
        continue;
      }
      let lines: ParityLine[];
      try {
        lines = await check.run(ctx);
        if (!lines.some((l) => !l.skipped))
          lines = [
            ...lines,
            {
              component: check.component,
              tensor: '(nothing compared)',
              maxAbs: NaN,
              maxRel: NaN,
              tol: 0,
              pass: false,
              note: 'no reference tensors matched',
            },
          ];
      } catch (e) {
        lines = [{ component: check.component, tensor: '(error)', maxAbs: NaN, maxRel: NaN, tol: 0, pass: false, note: (e as Error).message }];
      }
      for (const l of lines) {
        report.lines.push(l);
        if (l.skipped) report.notComputed++;
        else if (l.pass) report.passed++;
        else report.failed++;
        options.onLine?.(l);
      }
    }
  } finally {
    engine?.dispose();
  }
  return report;
}
