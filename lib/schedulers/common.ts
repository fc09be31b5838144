/**
 * Shared pieces of the schedulers: the public interface types, the noise argument, numpy-exact timestep
 * spacings and `add_noise`.
 */

import { ERR_INVALID_ARGUMENT, ERR_INVALID_OPTION, ERR_SHAPE_MISMATCH, XpsrError } from '../errors.js';

/**
 * Where a stochastic step gets its N(0, 1) noise: a ready tensor, a function returning `n` values, or any
 * object with `normal(n)` (e.g. {@link NoiseSource} / {@link ReplayNoise} from `lib/noise.ts`).
 * The noise length must equal the sample length.
 */
export type NoiseArg = Float32Array | ((n: number) => Float32Array) | { normal(n: number): Float32Array };

/** Output of {@link Scheduler.step}. */
export interface StepResult {
  /** x_{t−1} (float32, rounded from float64 arithmetic). */
  prevSample: Float32Array;
  /** The model's x₀ estimate at this step when the scheduler exposes one (DDPM). */
  predOriginalSample?: Float32Array;
}

/**
 * A diffusers-compatible sampler. All tensors are flat float32 arrays of one shape (any batch/channel layout:
 * the update is element-wise). Sample/model-output arithmetic is done in float64 and rounded once to float32;
 * scalar coefficients are float32 values computed as diffusers does from its float32 tables.
 *
 * Usage: `setTimesteps(n)`; for each `t` of `timesteps`: `x = step(eps(scaleModelInput(x, t), t), t, x).prevSample`.
 */
export interface Scheduler {
  /** Registry name: 'ddpm' | 'dpmpp' | 'unipc'. */
  readonly name: string;
  /** Resolved config (diffusers snake_case keys, defaults filled in). */
  readonly config: Readonly<Record<string, unknown>>;
  /** float32 β_t, length num_train_timesteps. */
  readonly betas: Float32Array;
  /** float32 ᾱ_t, length num_train_timesteps. */
  readonly alphasCumprod: Float32Array;
  /** Timesteps of the current schedule, in sampling order (empty before setTimesteps). */
  readonly timesteps: number[];
  /** Standard deviation of the initial noise (1 for all three schedulers). */
  readonly initNoiseSigma: number;
  /** Sets the number of inference steps, resets the multistep state and returns the timesteps. */
  setTimesteps(numInferenceSteps: number): number[];
  /** Model-input scaling (identity for DDPM, DPM-Solver++, UniPC); returns the input array itself. */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  /**
   * One reverse step at timestep `t` (must be a timestep of the schedule for the multistep solvers).
   * `noise` is needed only by stochastic schedulers (DDPM draws once per step while t > 0).
   */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: NoiseArg): StepResult;
  /** q(x_t | x_0): √ᾱ_t·x0 + √(1−ᾱ_t)·noise, float64 arithmetic on the float32 ᾱ_t (any integer t in range). */
  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array;
  /** Clears the multistep history (keeps the timesteps). */
  reset(): void;
}

/** Draws `n` values from a {@link NoiseArg}, checking the length. */
export function drawNoise(noise: NoiseArg | undefined, n: number, who: string): Float32Array {
  if (noise === undefined) {
    throw new XpsrError(ERR_INVALID_ARGUMENT, `${who}: this step needs Gaussian noise (pass a Float32Array, a function or a NoiseSource)`);
  }
  let z: unknown;
  if (noise instanceof Float32Array) z = noise;
  else if (typeof noise === 'function') z = noise(n);
  else if (noise !== null && typeof noise === 'object' && typeof noise.normal === 'function') z = noise.normal(n);
  else throw new XpsrError(ERR_INVALID_ARGUMENT, `${who}: noise must be a Float32Array, a function or an object with normal(n)`);
  if (!(z instanceof Float32Array)) throw new XpsrError(ERR_INVALID_ARGUMENT, `${who}: the noise provider did not return a Float32Array`);
  if (z.length !== n) {
    throw new XpsrError(ERR_SHAPE_MISMATCH, `${who}: noise has ${z.length} values, the sample has ${n}`);
  }
  return z;
}

export function checkSameLength(who: string, a: ArrayLike<number>, b: ArrayLike<number>, an: string, bn: string): void {
  if (a.length !== b.length) {
    throw new XpsrError(ERR_SHAPE_MISMATCH, `${who}: ${an} has ${a.length} values but ${bn} has ${b.length}`);
  }
}

/** numpy's `round` (half to even). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  if (Math.abs(x % 1) === 0.5) return 2 * Math.round(x / 2);
  return r;
}

/** `np.linspace(start, stop, num)` (float64, endpoint included, last element exactly `stop`). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  const out: number[] = [];
  if (num <= 0) return out;
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out.push(i * step + start);
  out[num - 1] = stop;
  return out;
}

/** `np.arange(start, stop, step)` for float arguments (length ⌈(stop − start)/step⌉). */
export function npArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out: number[] = [];
  for (let i = 0; i < len; i++) out.push(start + i * step);
  return out;
}

/** Keeps the first occurrence of each value (diffusers' `np.unique(..., return_index=True)` + sort of indices). */
export function uniqueKeepOrder(ts: number[]): number[] {
  const seen = new Set<number>();
  return ts.filter((t) => (seen.has(t) ? false : (seen.add(t), true)));
}

export function checkSteps(who: string, n: number, numTrain: number): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > numTrain) {
    throw new XpsrError(ERR_INVALID_OPTION, `${who}: num_inference_steps must be an integer in [1, ${numTrain}], got ${String(n)}`);
  }
}

export function checkTimestep(who: string, t: number, numTrain: number): void {
  if (!Number.isSafeInteger(t) || t < 0 || t >= numTrain) {
    throw new XpsrError(ERR_INVALID_ARGUMENT, `${who}: timestep must be an integer in [0, ${numTrain - 1}], got ${String(t)}`);
  }
}

/** diffusers `add_noise` with float64 sample arithmetic (the coefficients are √ of the float32 ᾱ_t in float64). */
export function addNoiseImpl(alphasCumprod: Float32Array, original: Float32Array, noise: Float32Array, t: number, who: string): Float32Array {
  checkTimestep(`${who}.addNoise`, t, alphasCumprod.length);
  checkSameLength(`${who}.addNoise`, original, noise, 'original', 'noise');
  const a = alphasCumprod[t]!;
  const sa = Math.sqrt(a);
  const sb = Math.sqrt(1 - a);
  const out = new Float32Array(original.length);
  for (let i = 0; i < out.length; i++) out[i] = sa * original[i]! + sb * noise[i]!;
  return out;
}

/** Reads a config value with a default, checking its type. */
export function opt<T>(cfg: Record<string, unknown>, key: string, def: T, check: (v: unknown) => boolean, expected: string): T {
  const v = cfg[key];
  if (v === undefined) return def;
  if (!check(v)) {
    throw new XpsrError(ERR_INVALID_OPTION, `scheduler config: '${key}' must be ${expected}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

export const isNum = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
export const isInt = (v: unknown): boolean => Number.isSafeInteger(v);
export const isStr = (v: unknown): boolean => typeof v === 'string';
export const isBool = (v: unknown): boolean => typeof v === 'boolean';

/**
 * Applies diffusers' `from_config` key handling: drops private keys and the keys listed in `_use_default_values`
 * (values the saving class only had as defaults), so the new class uses its own defaults for them.
 */
export function cleanConfig(cfg: Record<string, unknown>): Record<string, unknown> {
  const useDefaults = Array.isArray(cfg['_use_default_values']) ? new Set(cfg['_use_default_values'] as unknown[]) : new Set();
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(cfg)) {
    if (k.startsWith('_') || useDefaults.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Float64 copy of a float32 array. */
export function toF64(a: Float32Array): Float64Array {
  return Float64Array.from(a);
}
