/**
 * Noise-schedule tables (betas, alphas_cumprod) computed exactly as diffusers 0.21.4 does on PyTorch's CPU
 * backend, plus the float32-emulation helpers the schedulers use for their scalar coefficients.
 *
 * diffusers keeps `betas` / `alphas_cumprod` as float32 tensors, so every step coefficient is a float32 value
 * even when the latents are float64. We reproduce that bit-for-bit:
 *
 * - `torch.linspace(start, end, N, dtype=float32)` on an x86-64 CPU build (AVX2 kernel, 8-lane vectors,
 *   compiled with FMA contraction): `step = f32((f32(end) − f32(start)) / (N − 1))`; the first `16·⌊N/16⌋`
 *   elements are produced in 8-lane groups starting at `g`: `base = fma(step, g, start)` if `g < N/2` (integer
 *   halving) else `base = fma(−step, N − g − 1, end)`, lane `j` = `fma(j, step, base)`; the remaining tail
 *   elements `k` use the scalar formula `fma(step, k, start)` / `fma(−step, N − k − 1, end)` (same halfway
 *   rule). Every `fma` is a single float32 rounding.
 *   This reproduces the fixture's `betas` bit-exactly (a plain un-fused or 16-lane variant does not: 128–300
 *   of the 1000 values then differ by 1 ulp).
 * - `scaled_linear`: `betas = linspace(√b0, √b1)²` (float32 multiply); `linear`: `linspace(b0, b1)`;
 *   `squaredcos_cap_v2`: diffusers' `betas_for_alpha_bar` in float64, stored as float32.
 * - `alphas = f32(1 − betas)`; `alphas_cumprod = torch.cumprod(alphas)`: PyTorch's CPU cumprod accumulates in
 *   float64 (`acc_type<float>` = double) and rounds each prefix to float32.
 */

import { ERR_INVALID_OPTION, ERR_UNSUPPORTED, XpsrError } from '../errors.js';

/** Rounds to float32 (alias of Math.fround). */
export const f32 = Math.fround;

const bitsF = new Float32Array(1);
const bitsI = new Int32Array(bitsF.buffer);

/** The float32 adjacent to `x` (a float32 value) in the direction of `dir` (+1 / −1). */
function nextFloat32(x: number, dir: 1 | -1): number {
  if (x === 0) return dir > 0 ? 2 ** -149 : -(2 ** -149);
  bitsF[0] = x;
  bitsI[0] = bitsI[0]! + (x > 0 === dir > 0 ? 1 : -1);
  return bitsF[0]!;
}

/**
 * Fused multiply-add with a single rounding to float32: `round_f32(a·b + c)` for float32 inputs.
 * The product of two float32 values is exact in float64; the sum is done with an exact TwoSum so that a
 * float64 result lying exactly on a float32 rounding midpoint is resolved by the sign of the residual.
 */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bb = s - p;
  const e = p - (s - bb) + (c - bb);
  const r = f32(s);
  if (e === 0 || r === s || !Number.isFinite(s)) return r;
  const other = nextFloat32(r, s > r ? 1 : -1);
  if ((r + other) / 2 !== s) return r;
  return e > 0 === other > r ? other : r;
}

/** `torch.linspace(start, end, steps, dtype=torch.float32)` as computed by PyTorch's x86-64 CPU kernel (see module doc). */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps <= 0) return out;
  const s0 = f32(start);
  const s1 = f32(end);
  if (steps === 1) {
    out[0] = s0;
    return out;
  }
  const step = f32(f32(s1 - s0) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const scalarAt = (k: number): number => (k < halfway ? fma32(step, k, s0) : fma32(-step, steps - k - 1, s1));
  const V = 8;
  const vecEnd = Math.floor(steps / (2 * V)) * 2 * V;
  for (let g = 0; g < vecEnd; g += V) {
    const base = scalarAt(g);
    for (let j = 0; j < V; j++) out[g + j] = fma32(j, step, base);
  }
  for (let k = vecEnd; k < steps; k++) out[k] = scalarAt(k);
  return out;
}

/** The subset of a diffusers scheduler config that defines the noise schedule. */
export interface BetaScheduleConfig {
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: ArrayLike<number> | null;
  rescale_betas_zero_snr?: boolean;
}

/** Float32 tables shared by all schedulers. */
export interface NoiseSchedule {
  numTrainTimesteps: number;
  betas: Float32Array;
  alphas: Float32Array;
  alphasCumprod: Float32Array;
}

/** diffusers' `betas_for_alpha_bar` (cosine), computed in float64 and stored as float32. */
function betasForAlphaBar(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number): number => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  return out;
}

/** Largest accepted num_train_timesteps (diffusers models use 1000; the tables are allocated up front). */
export const MAX_TRAIN_TIMESTEPS = 100_000;

/** A β must be a number strictly between 0 and 1 (α = 1 − β must stay positive). */
function checkBeta(key: string, v: unknown): number {
  if (typeof v !== 'number' || !(v > 0 && v < 1)) {
    throw new XpsrError(ERR_INVALID_OPTION, `scheduler config: ${key} must be a number between 0 and 1 (exclusive), got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Builds betas / alphas / alphas_cumprod from a diffusers config (defaults: 1000 steps, linear, 1e-4 … 0.02,
 * i.e. the diffusers class defaults; SD-1.5 configs give scaled_linear 0.00085 … 0.012).
 * @throws XpsrError ERR_UNSUPPORTED for an unknown `beta_schedule` or `rescale_betas_zero_snr`.
 */
export function makeNoiseSchedule(cfg: BetaScheduleConfig): NoiseSchedule {
  const n = cfg.num_train_timesteps ?? 1000;
  if (!Number.isSafeInteger(n) || n < 2 || n > MAX_TRAIN_TIMESTEPS) {
    throw new XpsrError(
      ERR_INVALID_OPTION,
      `scheduler config: num_train_timesteps must be an integer between 2 and ${MAX_TRAIN_TIMESTEPS}, got ${String(n)}`,
    );
  }
  if (cfg.rescale_betas_zero_snr) {
    throw new XpsrError(ERR_UNSUPPORTED, 'scheduler config: rescale_betas_zero_snr is not supported');
  }
  const b0 = checkBeta('beta_start', cfg.beta_start ?? 0.0001);
  const b1 = checkBeta('beta_end', cfg.beta_end ?? 0.02);
  let betas: Float32Array;
  if (cfg.trained_betas != null) {
    if (!Array.isArray(cfg.trained_betas))
      throw new XpsrError(ERR_INVALID_OPTION, 'scheduler config: trained_betas must be an array of numbers or null');
    betas = Float32Array.from(cfg.trained_betas as ArrayLike<number>, (v, i) => checkBeta(`trained_betas[${i}]`, v));
    if (betas.length !== n) {
      throw new XpsrError(ERR_INVALID_OPTION, `scheduler config: trained_betas has ${betas.length} values, expected num_train_timesteps = ${n}`);
    }
  } else {
    const schedule = cfg.beta_schedule ?? 'linear';
    if (schedule === 'linear') {
      betas = torchLinspaceF32(b0, b1, n);
    } else if (schedule === 'scaled_linear') {
      betas = torchLinspaceF32(Math.sqrt(b0), Math.sqrt(b1), n);
      for (let i = 0; i < n; i++) betas[i] = f32(betas[i]! * betas[i]!);
    } else if (schedule === 'squaredcos_cap_v2') {
      betas = betasForAlphaBar(n);
    } else {
      throw new XpsrError(
        ERR_UNSUPPORTED,
        `scheduler config: beta_schedule ${JSON.stringify(schedule)} is not supported (linear, scaled_linear, squaredcos_cap_v2)`,
      );
    }
  }
  const alphas = new Float32Array(n);
  const alphasCumprod = new Float32Array(n);
  let acc = 1;
  for (let i = 0; i < n; i++) {
    alphas[i] = f32(1 - betas[i]!);
    acc *= alphas[i]!;
    alphasCumprod[i] = acc;
  }
  return { numTrainTimesteps: n, betas, alphas, alphasCumprod };
}
