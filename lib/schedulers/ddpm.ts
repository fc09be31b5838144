/**
 * DDPM ancestral sampler, as diffusers 0.21.4 `DDPMScheduler` (the scheduler of the XPSR pipeline).
 *
 * Timesteps (`set_timesteps(n)`, N = num_train_timesteps):
 * - `leading` (SD-1.5 default): `arange(n)·(N // n)` reversed, `+ steps_offset` → 20 steps: 951, 901, …, 1;
 * - `linspace`: `round_half_even(np.linspace(0, N − 1, n))` reversed;
 * - `trailing`: `round_half_even(np.arange(N, 0, −N/n)) − 1`.
 * The previous timestep is always `t − N // n` (diffusers' `previous_timestep`); ᾱ_prev = 1 when it is < 0.
 *
 * Step (float32 scalars ᾱ_t, ᾱ_p from the float32 table; `f()` = float32 rounding as torch does on 0-dim
 * float32 tensors; sample/model output in float64):
 * ```
 * β_t' = f(1 − ᾱ_t), β_p' = f(1 − ᾱ_p), α' = f(ᾱ_t / ᾱ_p), β' = f(1 − α')
 * x0   = (x − f(√β_t')·ε) / f(√ᾱ_t)                 (epsilon; v_prediction: f(√ᾱ_t)·x − f(√β_t')·v; sample: x0 = out)
 * x0   = clamp(x0, ±clip_sample_range) if clip_sample
 * mean = f(f(√ᾱ_p·β') / β_t')·x0 + f(f(√α'·β_p') / β_t')·x
 * var  = max(f(f(β_p' / β_t')·β'), f32(1e-20))      (fixed_small; fixed_large: β')
 * x'   = mean + f(√var)·z   (fixed_small_log: f(exp(0.5·log var))·z)
 * ```
 * `z` is drawn for every step with t > 0 — including the final t = 1 step where var is clamped to 1e-20 — so
 * a replayed noise stream stays aligned with diffusers (one draw per step).
 */

import { ERR_INVALID_ARGUMENT, ERR_INVALID_OPTION, ERR_UNSUPPORTED, XpsrError } from '../errors.js';
import { f32, makeNoiseSchedule, type NoiseSchedule } from './betas.js';
import {
  addNoiseImpl,
  checkSameLength,
  checkSteps,
  checkTimestep,
  cleanConfig,
  drawNoise,
  isBool,
  isInt,
  isNum,
  isStr,
  npArange,
  npLinspace,
  opt,
  roundHalfEven,
  type NoiseArg,
  type Scheduler,
  type StepResult,
} from './common.js';

/** diffusers DDPMScheduler config keys understood here (snake_case, as in scheduler_config.json). */
export interface DDPMConfig {
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: number[] | null;
  variance_type?: 'fixed_small' | 'fixed_small_log' | 'fixed_large';
  clip_sample?: boolean;
  clip_sample_range?: number;
  prediction_type?: 'epsilon' | 'v_prediction' | 'sample';
  thresholding?: boolean;
  timestep_spacing?: 'leading' | 'linspace' | 'trailing';
  steps_offset?: number;
  [key: string]: unknown;
}

const VARIANCE_TYPES = ['fixed_small', 'fixed_small_log', 'fixed_large'];
const PREDICTION_TYPES = ['epsilon', 'v_prediction', 'sample'];
const SPACINGS = ['leading', 'linspace', 'trailing'];
const ONE_E_MINUS_20 = f32(1e-20);

export class DDPMScheduler implements Scheduler {
  readonly name = 'ddpm';
  readonly config: Readonly<Record<string, unknown>>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  readonly initNoiseSigma = 1;
  private readonly sched: NoiseSchedule;
  private readonly varianceType: string;
  private readonly predictionType: string;
  private readonly clipSample: boolean;
  private readonly clipRange: number;
  private readonly spacing: string;
  private readonly stepsOffset: number;
  private numInferenceSteps = 0;
  private ts: number[] = [];

  constructor(config: DDPMConfig = {}) {
    const cfg = cleanConfig(config);
    this.sched = makeNoiseSchedule(cfg as never);
    this.betas = this.sched.betas;
    this.alphasCumprod = this.sched.alphasCumprod;
    this.varianceType = opt(cfg, 'variance_type', 'fixed_small', isStr, 'a string');
    if (this.varianceType === 'fixed_large_log' || this.varianceType === 'learned' || this.varianceType === 'learned_range') {
      throw new XpsrError(
        ERR_UNSUPPORTED,
        `DDPM: variance_type ${JSON.stringify(this.varianceType)} is not supported (needs a model that predicts the variance / is invalid for sampling); use ${VARIANCE_TYPES.join(', ')}`,
      );
    }
    if (!VARIANCE_TYPES.includes(this.varianceType)) {
      throw new XpsrError(ERR_UNSUPPORTED, `DDPM: unknown variance_type ${JSON.stringify(this.varianceType)} (${VARIANCE_TYPES.join(', ')})`);
    }
    this.predictionType = opt(cfg, 'prediction_type', 'epsilon', isStr, 'a string');
    if (!PREDICTION_TYPES.includes(this.predictionType)) {
      throw new XpsrError(
        ERR_UNSUPPORTED,
        `DDPM: prediction_type ${JSON.stringify(this.predictionType)} is not supported (${PREDICTION_TYPES.join(', ')})`,
      );
    }
    if (opt(cfg, 'thresholding', false, isBool, 'a boolean')) {
      throw new XpsrError(ERR_UNSUPPORTED, 'DDPM: thresholding=true (dynamic thresholding) is not supported');
    }
    this.clipSample = opt(cfg, 'clip_sample', true, isBool, 'a boolean');
    this.clipRange = opt(cfg, 'clip_sample_range', 1.0, (v) => isNum(v) && (v as number) > 0, 'a positive number');
    this.spacing = opt(cfg, 'timestep_spacing', 'leading', isStr, 'a string');
    if (!SPACINGS.includes(this.spacing)) {
      throw new XpsrError(ERR_UNSUPPORTED, `DDPM: timestep_spacing ${JSON.stringify(this.spacing)} is not supported (${SPACINGS.join(', ')})`);
    }
    this.stepsOffset = opt(
      cfg,
      'steps_offset',
      0,
      (v) => isInt(v) && (v as number) >= 0 && (v as number) < this.sched.numTrainTimesteps,
      `an integer between 0 and ${this.sched.numTrainTimesteps - 1}`,
    );
    this.config = Object.freeze({
      ...cfg,
      num_train_timesteps: this.sched.numTrainTimesteps,
      variance_type: this.varianceType,
      prediction_type: this.predictionType,
      clip_sample: this.clipSample,
      clip_sample_range: this.clipRange,
      timestep_spacing: this.spacing,
      steps_offset: this.stepsOffset,
    });
  }

  get timesteps(): number[] {
    return this.ts.slice();
  }

  setTimesteps(n: number): number[] {
    const N = this.sched.numTrainTimesteps;
    checkSteps('DDPM.setTimesteps', n, N);
    let ts: number[];
    if (this.spacing === 'linspace') {
      ts = npLinspace(0, N - 1, n)
        .map(roundHalfEven)
        .reverse();
    } else if (this.spacing === 'leading') {
      const ratio = Math.floor(N / n);
      const last = (k: number) => (k - 1) * Math.floor(N / k) + this.stepsOffset;
      if (last(n) > N - 1) {
        // diffusers would index past the schedule here (SD-1.5: 1000 steps + steps_offset 1 reach t = 1000)
        let most = n;
        while (most > 1 && last(most) > N - 1) most--;
        throw new XpsrError(
          ERR_INVALID_OPTION,
          `Invalid option 'steps': expected at most ${most} with this scheduler ` +
            `(${N} training timesteps, steps_offset ${this.stepsOffset}), got ${n}`,
          { option: 'steps' },
        );
      }
      ts = [];
      for (let i = n - 1; i >= 0; i--) ts.push(i * ratio + this.stepsOffset);
    } else {
      ts = npArange(N, 0, -N / n).map((v) => roundHalfEven(v) - 1);
    }
    this.numInferenceSteps = n;
    this.ts = ts;
    return ts.slice();
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  /** diffusers `previous_timestep`: t − N // num_inference_steps (N // N = 1 before setTimesteps). */
  previousTimestep(t: number): number {
    const n = this.numInferenceSteps || this.sched.numTrainTimesteps;
    return t - Math.floor(this.sched.numTrainTimesteps / n);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: NoiseArg): StepResult {
    const N = this.sched.numTrainTimesteps;
    checkTimestep('DDPM.step', t, N);
    checkSameLength('DDPM.step', modelOutput, sample, 'modelOutput', 'sample');
    const ac = this.alphasCumprod;
    const prevT = this.previousTimestep(t);
    if (prevT >= N) throw new XpsrError(ERR_INVALID_ARGUMENT, `DDPM.step: previous timestep ${prevT} out of range`);
    const aT = ac[t]!;
    const aP = prevT >= 0 ? ac[prevT]! : 1;
    const betaT = f32(1 - aT);
    const betaP = f32(1 - aP);
    const curAlpha = f32(aT / aP);
    const curBeta = f32(1 - curAlpha);
    const sqrtBetaT = f32(Math.sqrt(betaT));
    const sqrtAT = f32(Math.sqrt(aT));
    const c0 = f32(f32(f32(Math.sqrt(aP)) * curBeta) / betaT);
    const c1 = f32(f32(f32(Math.sqrt(curAlpha)) * betaP) / betaT);

    const n = sample.length;
    const x0 = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const x = sample[i]!;
      const e = modelOutput[i]!;
      let v: number;
      if (this.predictionType === 'epsilon') v = (x - sqrtBetaT * e) / sqrtAT;
      else if (this.predictionType === 'v_prediction') v = sqrtAT * x - sqrtBetaT * e;
      else v = e;
      if (this.clipSample) v = Math.min(Math.max(v, -this.clipRange), this.clipRange);
      x0[i] = v;
    }

    let std = 0;
    let z: Float32Array | undefined;
    if (t > 0) {
      z = drawNoise(noise, n, 'DDPM.step');
      let variance = f32(f32(betaP / betaT) * curBeta);
      variance = Math.max(variance, ONE_E_MINUS_20);
      if (this.varianceType === 'fixed_small') std = f32(Math.sqrt(variance));
      else if (this.varianceType === 'fixed_small_log') std = f32(Math.exp(f32(0.5 * f32(Math.log(variance)))));
      else std = f32(Math.sqrt(curBeta));
    }

    const prev = new Float32Array(n);
    const pred = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let v = c0 * x0[i]! + c1 * sample[i]!;
      if (z) v = v + std * z[i]!;
      prev[i] = v;
      pred[i] = x0[i]!;
    }
    return { prevSample: prev, predOriginalSample: pred };
  }

  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    return addNoiseImpl(this.alphasCumprod, original, noise, t, 'DDPM');
  }

  reset(): void {
    /* DDPM has no multistep state. */
  }
}
