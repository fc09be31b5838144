/**
 * Diffusion schedulers (samplers) compatible with diffusers 0.21.4.
 *
 * ```ts
 * const cfg = loadSchedulerConfig(modelDir);          // <modelDir>/scheduler/scheduler_config.json
 * const s = createScheduler('ddpm', cfg);             // or 'dpmpp' / 'dpmsolver++' / 'dpm-solver++' / 'unipc'
 * for (const t of s.setTimesteps(20)) x = s.step(eps(x, t), t, x, noise).prevSample;
 * ```
 * `config` uses diffusers' snake_case keys. Like diffusers' `from_config`, keys starting with `_` and keys
 * listed in `_use_default_values` are ignored and every scheduler reads only the keys it knows, so a DDPM
 * config can build a DPM-Solver++ / UniPC scheduler. NOTE: a config file saved by diffusers ≥ 0.21 carries an
 * explicit `timestep_spacing` (SD-1.5's: "leading"), which then also applies to DPM-Solver++ / UniPC; the
 * 999, 949, … schedules of their class default need `timestep_spacing: 'linspace'`.
 */

import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ERR_INVALID_OPTION, ERR_IO, ERR_WEIGHTS_INVALID, XpsrError } from '../errors.js';
import { DDPMScheduler } from './ddpm.js';
import { DPMSolverMultistepScheduler } from './dpmpp.js';
import { UniPCMultistepScheduler } from './unipc.js';

export type { Scheduler, StepResult, NoiseArg } from './common.js';
export { DDPMScheduler, type DDPMConfig } from './ddpm.js';
export { DPMSolverMultistepScheduler, type DPMSolverConfig } from './dpmpp.js';
export { UniPCMultistepScheduler, type UniPCConfig } from './unipc.js';
export { makeNoiseSchedule, torchLinspaceF32, fma32, type NoiseSchedule, type BetaScheduleConfig } from './betas.js';

import type { Scheduler } from './common.js';

/** A diffusers scheduler config (snake_case keys as in scheduler_config.json). */
export type SchedulerConfig = Record<string, unknown>;

const REGISTRY: Record<string, (cfg: SchedulerConfig) => Scheduler> = {
  ddpm: (c) => new DDPMScheduler(c),
  dpmpp: (c) => new DPMSolverMultistepScheduler(c),
  'dpmsolver++': (c) => new DPMSolverMultistepScheduler(c),
  'dpm-solver++': (c) => new DPMSolverMultistepScheduler(c),
  dpmsolvermultistep: (c) => new DPMSolverMultistepScheduler(c),
  unipc: (c) => new UniPCMultistepScheduler(c),
};

/** Names accepted by {@link createScheduler} (case-insensitive). */
export const SCHEDULER_NAMES: readonly string[] = Object.freeze(Object.keys(REGISTRY));

/**
 * Creates a scheduler by name: 'ddpm', 'dpmpp' (aliases 'dpmsolver++', 'dpm-solver++', 'dpmsolvermultistep'),
 * 'unipc'. Throws XpsrError ERR_INVALID_OPTION for an unknown name, ERR_UNSUPPORTED for unsupported config values.
 */
export function createScheduler(name: string, config: SchedulerConfig = {}): Scheduler {
  const make = typeof name === 'string' ? REGISTRY[name.toLowerCase()] : undefined;
  if (!make) {
    throw new XpsrError(ERR_INVALID_OPTION, `Unknown scheduler ${JSON.stringify(name)}: expected one of ${SCHEDULER_NAMES.join(', ')}`,
      { option: 'scheduler' });
  }
  return make(config);
}

/**
 * Reads a diffusers scheduler config. `path` may be a model folder (reads `scheduler/scheduler_config.json`),
 * a `scheduler` folder (reads `scheduler_config.json`) or the JSON file itself.
 */
export function loadSchedulerConfig(path: string): SchedulerConfig {
  let file = path;
  try {
    if (statSync(path).isDirectory()) {
      const nested = join(path, 'scheduler', 'scheduler_config.json');
      const direct = join(path, 'scheduler_config.json');
      file = exists(nested) ? nested : direct;
    }
  } catch { /* reported below */ }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new XpsrError(ERR_IO, `${file}: cannot read scheduler config (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
      { path: file }, { cause: e });
  }
  let cfg: unknown;
  try {
    // Python's json writes non-finite floats as bare NaN / Infinity tokens.
    cfg = JSON.parse(text.replace(/(?<=[:\[,]\s*)-?Infinity\b|(?<=[:\[,]\s*)NaN\b/g, 'null'));
  } catch (e) {
    throw new XpsrError(ERR_WEIGHTS_INVALID, `${file}: scheduler config is not valid JSON (${(e as Error).message})`, { path: file });
  }
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) {
    throw new XpsrError(ERR_WEIGHTS_INVALID, `${file}: scheduler config is not a JSON object`, { path: file });
  }
  return cfg as SchedulerConfig;
}

function exists(p: string): boolean {
  try { statSync(p); return true; } catch { return false; }
}
