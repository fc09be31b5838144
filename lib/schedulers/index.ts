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

import { ERR_INVALID_OPTION, XpsrError } from '../errors.js';
import type { SchedulerConfig } from './config.js';
import { DDPMScheduler } from './ddpm.js';
import { DPMSolverMultistepScheduler } from './dpmpp.js';
import { UniPCMultistepScheduler } from './unipc.js';

export type { Scheduler, StepResult, NoiseArg } from './common.js';
export { DDPMScheduler, type DDPMConfig } from './ddpm.js';
export { DPMSolverMultistepScheduler, type DPMSolverConfig } from './dpmpp.js';
export { UniPCMultistepScheduler, type UniPCConfig } from './unipc.js';
export { makeNoiseSchedule, torchLinspaceF32, fma32, type NoiseSchedule, type BetaScheduleConfig } from './betas.js';

import type { Scheduler } from './common.js';

export {
  loadSchedulerConfig,
  parseSchedulerConfig,
  parsePythonJson,
  schedulerConfigFrom,
  checkSchedulerConfig,
  SD15_SCHEDULER_CONFIG,
  type SchedulerConfig,
} from './config.js';

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
    throw new XpsrError(ERR_INVALID_OPTION, `Unknown scheduler ${JSON.stringify(name)}: expected one of ${SCHEDULER_NAMES.join(', ')}`, {
      option: 'scheduler',
    });
  }
  return make(config);
}
