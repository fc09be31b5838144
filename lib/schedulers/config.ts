/**
 * The one reader of diffusers scheduler configs (scheduler_config.json): text -> checked object. Every
 * caller (XPSR.load, `xpsr doctor`, parity) goes through here, so a config with NaN, infinities (other
 * than DPM-Solver's `lambda_min_clipped: -Infinity`), absurd sizes or values no scheduler accepts is refused
 * once, with the file and the key, before anything runs.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ERR_IO, ERR_WEIGHTS_INVALID, XpsrError } from '../errors.js';
import { DDPMScheduler } from './ddpm.js';
import { DPMSolverMultistepScheduler } from './dpmpp.js';
import { UniPCMultistepScheduler } from './unipc.js';

/** A diffusers scheduler config (snake_case keys as in scheduler_config.json). */
export type SchedulerConfig = Record<string, unknown>;

/** SD-1.5's scheduler_config.json (used when the SD folder has no scheduler/). */
export const SD15_SCHEDULER_CONFIG: Readonly<SchedulerConfig> = Object.freeze({
  _class_name: 'PNDMScheduler',
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  trained_betas: null,
  clip_sample: false,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  prediction_type: 'epsilon',
});

/** Keys whose value may legitimately be -Infinity in a diffusers config (Python's json writes `-Infinity`). */
const MAY_BE_MINUS_INFINITY = new Set(['lambda_min_clipped']);
const NON_FINITE = /(?<=[:[,]\s*)(-?Infinity|NaN)\b/g;
const MARK = '\u0000nonfinite:';

/** JSON.parse that also reads the bare NaN / Infinity / -Infinity tokens Python's json writes. */
export function parsePythonJson(text: string): unknown {
  return JSON.parse(
    text.replace(NON_FINITE, (m) => JSON.stringify(MARK + m)),
    (_k, v: unknown) => (typeof v === 'string' && v.startsWith(MARK) ? Number(v.slice(MARK.length)) : v),
  );
}

function hasNonFinite(v: unknown): boolean {
  if (typeof v === 'number') return !Number.isFinite(v);
  if (Array.isArray(v)) return v.some(hasNonFinite);
  if (v !== null && typeof v === 'object') return Object.values(v).some(hasNonFinite);
  return false;
}

/**
 * Checks a parsed config object: an object whose numbers are finite, except `lambda_min_clipped`, which
 * may be -Infinity as in diffusers. Throws XpsrError ERR_WEIGHTS_INVALID naming `source` and the key.
 */
export function schedulerConfigFrom(cfg: unknown, source: string): SchedulerConfig {
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) {
    throw new XpsrError(ERR_WEIGHTS_INVALID, `${source}: scheduler config is not a JSON object`, { path: source });
  }
  for (const [k, v] of Object.entries(cfg)) {
    if (v === -Infinity && MAY_BE_MINUS_INFINITY.has(k)) continue;
    if (hasNonFinite(v))
      throw new XpsrError(ERR_WEIGHTS_INVALID, `${source}: '${k}' holds NaN or Infinity; expected finite numbers`, { path: source, key: k });
  }
  return cfg as SchedulerConfig;
}

/** Parses and checks the text of a scheduler config (see {@link schedulerConfigFrom}). */
export function parseSchedulerConfig(text: string, source: string): SchedulerConfig {
  let cfg: unknown;
  try {
    cfg = parsePythonJson(text);
  } catch (e) {
    throw new XpsrError(ERR_WEIGHTS_INVALID, `${source}: scheduler config is not valid JSON (${(e as Error).message})`, { path: source });
  }
  return schedulerConfigFrom(cfg, source);
}

/**
 * Builds every scheduler this library offers from `cfg` and sets a 20-step schedule, so that a config that
 * would fail later fails here. Throws XpsrError ERR_WEIGHTS_INVALID naming `source` and the problem.
 */
export function checkSchedulerConfig(cfg: SchedulerConfig, source: string): void {
  for (const make of [
    (c: SchedulerConfig) => new DDPMScheduler(c),
    (c: SchedulerConfig) => new DPMSolverMultistepScheduler(c),
    (c: SchedulerConfig) => new UniPCMultistepScheduler(c),
  ]) {
    try {
      const s = make(cfg);
      s.setTimesteps(Math.min(20, s.betas.length));
    } catch (e) {
      const err = e as { message?: string };
      throw new XpsrError(ERR_WEIGHTS_INVALID, `${source}: ${err.message ?? String(e)}`, { path: source }, { cause: e });
    }
  }
}

/**
 * Reads and checks a diffusers scheduler config. `path` may be a model folder (reads
 * `scheduler/scheduler_config.json`), a `scheduler` folder (reads `scheduler_config.json`) or the JSON file.
 * Throws ERR_IO when it cannot be read, ERR_WEIGHTS_INVALID when it is not a usable config.
 */
export function loadSchedulerConfig(path: string): SchedulerConfig {
  let file = path;
  try {
    if (statSync(path).isDirectory()) {
      const nested = join(path, 'scheduler', 'scheduler_config.json');
      file = exists(nested) ? nested : join(path, 'scheduler_config.json');
    }
  } catch {
    /* reported below */
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new XpsrError(
      ERR_IO,
      `${file}: cannot read scheduler config (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
      { path: file },
      { cause: e },
    );
  }
  const cfg = parseSchedulerConfig(text, file);
  checkSchedulerConfig(cfg, file);
  return cfg;
}

function exists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}
