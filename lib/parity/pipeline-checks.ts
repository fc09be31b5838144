/**
 * Parity checks of the TypeScript half of the pipeline: schedulers and colour fix (and, in
 * pipeline-run.ts, the tokenizer and the full pipeline runs). Same line format as the engine checks.
 */
import { XpsrError } from '../errors.js';
import path from 'node:path';
import { toFloat32, type SafetensorsFile } from '../io/safetensors.js';
import { createScheduler, loadSchedulerConfig, parsePythonJson, schedulerConfigFrom, type Scheduler } from '../schedulers/index.js';
import { adainColorFixFloat, colorFix, waveletColorFixFloat } from '../colorfix.js';
import { compareFloat, compareU8, exactInts, type ParityLine } from './compare.js';
import type { ParityCheck } from './index.js';
import { tokenizerCheck, pipelineRunChecks } from './pipeline-run.js';

function tensor(f: SafetensorsFile, key: string) {
  const t = f.tensors.get(key);
  if (!t) throw new XpsrError('ERR_WEIGHTS_MISSING', `fixture tensor '${key}' is missing`);
  return t;
}
const f32 = (f: SafetensorsFile, key: string) => toFloat32(tensor(f, key));
const ints = (f: SafetensorsFile, key: string) => Array.from(tensor(f, key).data as BigInt64Array, Number);

function schedulerConfig(dir: string): Record<string, unknown> {
  return loadSchedulerConfig(path.join(dir, 'model', 'scheduler', 'scheduler_config.json'));
}

/** The `info` metadata of a fixture (JSON written by Python: may hold -Infinity). */
function fixtureInfo(f: SafetensorsFile): Record<string, unknown> {
  return (parsePythonJson(f.metadata.info ?? '{}') ?? {}) as Record<string, unknown>;
}

/** The scheduler config a fixture was generated with (metadata info.config), else the model folder's. */
function fixtureConfig(f: SafetensorsFile, dir: string): Record<string, unknown> {
  const config = fixtureInfo(f).config;
  return config === undefined ? schedulerConfig(dir) : schedulerConfigFrom(config, 'fixture metadata info.config');
}

/** Chained multistep fixture (DPM-Solver++ / UniPC): timesteps and 5 steps of a 20-step run. */
function multistepLines(component: string, s: Scheduler, f: SafetensorsFile): ParityLine[] {
  const lines: ParityLine[] = [];
  for (const n of [20, 50]) lines.push(exactInts(component, `timesteps_${n}`, s.setTimesteps(n), ints(f, `timesteps_${n}`)));
  const ts = s.setTimesteps(20);
  for (let i = 0; f.tensors.has(`model_output.${i}`); i++) {
    const out = s.step(f32(f, `model_output.${i}`), ts[i], f32(f, `sample.${i}`)).prevSample;
    lines.push(compareFloat(component, `sample.${i + 1}`, out, f32(f, `sample.${i + 1}`), 1e-5));
  }
  return lines;
}

export const schedulerChecks: ParityCheck[] = [
  {
    component: 'scheduler_ddpm',
    files: ['scheduler_ddpm.safetensors', 'model/scheduler/scheduler_config.json'],
    async run(ctx) {
      const f = ctx.read('scheduler_ddpm.safetensors');
      const s = createScheduler('ddpm', schedulerConfig(ctx.dir));
      const c = 'scheduler_ddpm';
      const lines: ParityLine[] = [
        compareFloat(c, 'betas', s.betas, f32(f, 'betas'), 1e-6),
        compareFloat(c, 'alphas_cumprod', s.alphasCumprod, f32(f, 'alphas_cumprod'), 1e-6),
      ];
      for (const n of [4, 5, 20, 50]) lines.push(exactInts(c, `timesteps_${n}`, s.setTimesteps(n), ints(f, `timesteps_${n}`)));
      const info = fixtureInfo(f) as { step_cases?: { index: number; timestep: number; num_inference_steps: number }[] };
      for (const sc of info.step_cases ?? []) {
        s.setTimesteps(sc.num_inference_steps);
        const r = s.step(f32(f, `step${sc.index}.model_output`), sc.timestep, f32(f, `step${sc.index}.sample`), f32(f, `step${sc.index}.noise`));
        lines.push(compareFloat(c, `step${sc.index}.prev_sample`, r.prevSample, f32(f, `step${sc.index}.prev_sample`), 1e-5));
        if (r.predOriginalSample)
          lines.push(
            compareFloat(c, `step${sc.index}.pred_original_sample`, r.predOriginalSample, f32(f, `step${sc.index}.pred_original_sample`), 1e-5),
          );
      }
      for (const key of f.tensors.keys()) {
        const m = /^add_noise\.t(\d+)$/.exec(key);
        if (!m) continue;
        const out = s.addNoise(f32(f, 'add_noise.original'), f32(f, 'add_noise.noise'), Number(m[1]));
        lines.push(compareFloat(c, key, out, f32(f, key), 1e-6));
      }
      return lines;
    },
  },
  {
    component: 'scheduler_dpmsolver',
    files: ['scheduler_dpmsolver_multistep.safetensors', 'model/scheduler/scheduler_config.json'],
    async run(ctx) {
      const f = ctx.read('scheduler_dpmsolver_multistep.safetensors');
      return multistepLines('scheduler_dpmsolver', createScheduler('dpmpp', fixtureConfig(f, ctx.dir)), f);
    },
  },
  {
    component: 'scheduler_unipc',
    files: ['scheduler_unipc_multistep.safetensors', 'model/scheduler/scheduler_config.json'],
    async run(ctx) {
      const f = ctx.read('scheduler_unipc_multistep.safetensors');
      return multistepLines('scheduler_unipc', createScheduler('unipc', fixtureConfig(f, ctx.dir)), f);
    },
  },
  {
    component: 'colorfix',
    files: ['colorfix.safetensors'],
    async run(ctx) {
      const f = ctx.read('colorfix.safetensors');
      const t = tensor(f, 'target_u8');
      const [height, width] = t.shape;
      const target = { data: t.data as Uint8Array, width, height };
      const source = { data: tensor(f, 'source_u8').data as Uint8Array, width, height };
      return [
        compareFloat('colorfix', 'adain_float32', adainColorFixFloat(target, source), f32(f, 'adain_float32'), 1e-5, true),
        compareU8('colorfix', 'adain_u8', colorFix('adain', target, source), tensor(f, 'adain_u8').data as Uint8Array),
        compareFloat('colorfix', 'wavelet_float32', waveletColorFixFloat(target, source), f32(f, 'wavelet_float32'), 1e-5, true),
        compareU8('colorfix', 'wavelet_u8', colorFix('wavelet', target, source), tensor(f, 'wavelet_u8').data as Uint8Array),
      ];
    },
  },
];

export const pipelineChecks: ParityCheck[] = [tokenizerCheck, ...schedulerChecks, ...pipelineRunChecks];
