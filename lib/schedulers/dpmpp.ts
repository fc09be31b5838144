/**
 * DPM-Solver++ multistep sampler, as diffusers 0.21.4 `DPMSolverMultistepScheduler` with
 * `algorithm_type = "dpmsolver++"` (the only algorithm supported here; `deis` maps to it like in diffusers).
 *
 * Tables (float32, as diffusers): α_t = f(√ᾱ_t), σ_t = f(√(1 − ᾱ_t)), λ_t = f(f(log α_t) − f(log σ_t)).
 *
 * Timesteps: `linspace` (class default) = `round_half_even(np.linspace(0, T − 1, n + 1))` reversed without
 * the final 0 (T = N unless `lambda_min_clipped` clips the end) → 20 steps: 999, 949, …, 549, 500, …, 50;
 * `leading` = `arange(n + 1)·(T // (n + 1))` reversed minus last, `+ steps_offset`; `trailing` =
 * `round_half_even(np.arange(T, 0, −N/n)) − 1`; duplicates removed keeping the first occurrence.
 * The step after the last timestep goes to t = 0 (α_0, σ_0 of the table, not a clean x₀).
 *
 * Per step (index i, s0 = t, t' = next timestep or 0), x₀ model m_i = (x − σ_s0·ε) / α_s0 (epsilon;
 * v_prediction: α·x − σ·v; sample: the output itself), kept as float64:
 * ```
 * h = f(λ_t' − λ_s0), E = f(exp_f32(−h) − 1)   (exp_f32 = PyTorch's CPU float32 exp, see torchmath.ts)
 * order 1: x' = f(σ_t'/σ_s0)·x − f(α_t'·E)·m0
 * order 2: r0 = f(f(λ_s0 − λ_s1)/h), D1 = f(1/r0)·(m0 − m1)
 *          midpoint: x' = f(σ_t'/σ_s0)·x − f(α_t'·E)·m0 − f(0.5·f(α_t'·E))·D1
 *          heun:     x' = f(σ_t'/σ_s0)·x − f(α_t'·E)·m0 + f(α_t'·f(f(E/h) + 1))·D1
 * order 3: diffusers' third-order multistep formula.
 * ```
 * The order ramps up with the number of past outputs (first step order 1); with `lower_order_final` and fewer
 * than 15 timesteps the last step is first order and the one before it at most second order.
 */

import { ERR_INVALID_ARGUMENT, ERR_UNSUPPORTED, XpsrError } from '../errors.js';
import { f32, makeNoiseSchedule, type NoiseSchedule } from './betas.js';
import { torchExpF32 } from './torchmath.js';
import {
  addNoiseImpl,
  checkSameLength,
  checkSteps,
  cleanConfig,
  isBool,
  isInt,
  isStr,
  npArange,
  npLinspace,
  opt,
  roundHalfEven,
  uniqueKeepOrder,
  type NoiseArg,
  type Scheduler,
  type StepResult,
} from './common.js';

/** diffusers DPMSolverMultistepScheduler config keys understood here. */
export interface DPMSolverConfig {
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: number[] | null;
  solver_order?: 1 | 2 | 3;
  prediction_type?: 'epsilon' | 'v_prediction' | 'sample';
  algorithm_type?: 'dpmsolver++';
  solver_type?: 'midpoint' | 'heun';
  lower_order_final?: boolean;
  lambda_min_clipped?: number;
  timestep_spacing?: 'linspace' | 'leading' | 'trailing';
  steps_offset?: number;
  [key: string]: unknown;
}

/** float32 tables α_t, σ_t, λ_t shared by the DPM-Solver++ and UniPC schedulers. */
export interface VpTables {
  alphaT: Float32Array;
  sigmaT: Float32Array;
  lambdaT: Float32Array;
}

export function makeVpTables(ac: Float32Array): VpTables {
  const n = ac.length;
  const alphaT = new Float32Array(n);
  const sigmaT = new Float32Array(n);
  const lambdaT = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    alphaT[i] = Math.sqrt(ac[i]!);
    sigmaT[i] = Math.sqrt(f32(1 - ac[i]!));
    lambdaT[i] = f32(f32(Math.log(alphaT[i]!)) - f32(Math.log(sigmaT[i]!)));
  }
  return { alphaT, sigmaT, lambdaT };
}

/**
 * diffusers' multistep timestep spacing (DPM-Solver++ with `lastTimestep` = T after λ clipping; UniPC with T = N).
 * `trailingFrom` is the arange start for `trailing` (DPM: T, UniPC: N).
 */
export function multistepTimesteps(
  who: string,
  spacing: string,
  n: number,
  numTrain: number,
  lastTimestep: number,
  stepsOffset: number,
  trailingFrom: number,
): number[] {
  checkSteps(who, n, numTrain);
  let ts: number[];
  if (spacing === 'linspace') {
    ts = npLinspace(0, lastTimestep - 1, n + 1)
      .map(roundHalfEven)
      .reverse()
      .slice(0, n);
  } else if (spacing === 'leading') {
    const ratio = Math.floor(lastTimestep / (n + 1));
    ts = [];
    for (let i = n; i >= 1; i--) ts.push(i * ratio + stepsOffset);
  } else if (spacing === 'trailing') {
    ts = npArange(trailingFrom, 0, -numTrain / n).map((v) => roundHalfEven(v) - 1);
  } else {
    throw new XpsrError(ERR_UNSUPPORTED, `${who}: timestep_spacing ${JSON.stringify(spacing)} is not supported (linspace, leading, trailing)`);
  }
  return uniqueKeepOrder(ts);
}

const PREDICTION_TYPES = ['epsilon', 'v_prediction', 'sample'];

export class DPMSolverMultistepScheduler implements Scheduler {
  readonly name = 'dpmpp';
  readonly config: Readonly<Record<string, unknown>>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  readonly initNoiseSigma = 1;
  private readonly sched: NoiseSchedule;
  private readonly tab: VpTables;
  private readonly solverOrder: number;
  private readonly predictionType: string;
  private readonly solverType: string;
  private readonly lowerOrderFinal: boolean;
  private readonly lambdaMinClipped: number;
  private readonly spacing: string;
  private readonly stepsOffset: number;
  private ts: number[] = [];
  private modelOutputs: Array<Float64Array | null> = [];
  private lowerOrderNums = 0;

  constructor(config: DPMSolverConfig = {}) {
    const cfg = cleanConfig(config);
    this.sched = makeNoiseSchedule(cfg as never);
    this.betas = this.sched.betas;
    this.alphasCumprod = this.sched.alphasCumprod;
    this.tab = makeVpTables(this.alphasCumprod);
    this.solverOrder = opt(cfg, 'solver_order', 2, isInt, 'an integer');
    if (this.solverOrder < 1 || this.solverOrder > 3) {
      throw new XpsrError(ERR_UNSUPPORTED, `DPM-Solver++: solver_order must be 1, 2 or 3, got ${this.solverOrder}`);
    }
    this.predictionType = opt(cfg, 'prediction_type', 'epsilon', isStr, 'a string');
    if (!PREDICTION_TYPES.includes(this.predictionType)) {
      throw new XpsrError(
        ERR_UNSUPPORTED,
        `DPM-Solver++: prediction_type ${JSON.stringify(this.predictionType)} is not supported (${PREDICTION_TYPES.join(', ')})`,
      );
    }
    let algorithm = opt(cfg, 'algorithm_type', 'dpmsolver++', isStr, 'a string');
    if (algorithm === 'deis') algorithm = 'dpmsolver++';
    if (algorithm !== 'dpmsolver++') {
      throw new XpsrError(ERR_UNSUPPORTED, `DPM-Solver++: algorithm_type ${JSON.stringify(algorithm)} is not supported (only dpmsolver++)`);
    }
    let solverType = opt(cfg, 'solver_type', 'midpoint', isStr, 'a string');
    if (['logrho', 'bh1', 'bh2'].includes(solverType)) solverType = 'midpoint';
    if (solverType !== 'midpoint' && solverType !== 'heun') {
      throw new XpsrError(ERR_UNSUPPORTED, `DPM-Solver++: solver_type ${JSON.stringify(solverType)} is not supported (midpoint, heun)`);
    }
    this.solverType = solverType;
    if (opt(cfg, 'thresholding', false, isBool, 'a boolean')) {
      throw new XpsrError(ERR_UNSUPPORTED, 'DPM-Solver++: thresholding=true is not supported');
    }
    if (opt(cfg, 'use_karras_sigmas', false, isBool, 'a boolean')) {
      throw new XpsrError(ERR_UNSUPPORTED, 'DPM-Solver++: use_karras_sigmas=true is not supported');
    }
    const vt = cfg['variance_type'];
    if (vt === 'learned' || vt === 'learned_range') {
      throw new XpsrError(ERR_UNSUPPORTED, `DPM-Solver++: variance_type ${JSON.stringify(vt)} (variance-predicting models) is not supported`);
    }
    this.lowerOrderFinal = opt(cfg, 'lower_order_final', true, isBool, 'a boolean');
    const lmc = cfg['lambda_min_clipped'];
    this.lambdaMinClipped =
      lmc === undefined || lmc === null || lmc === '-Infinity'
        ? -Infinity
        : opt(cfg, 'lambda_min_clipped', -Infinity, (v) => typeof v === 'number', 'a number');
    this.spacing = opt(cfg, 'timestep_spacing', 'linspace', isStr, 'a string');
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
      solver_order: this.solverOrder,
      prediction_type: this.predictionType,
      algorithm_type: 'dpmsolver++',
      solver_type: this.solverType,
      lower_order_final: this.lowerOrderFinal,
      lambda_min_clipped: this.lambdaMinClipped,
      timestep_spacing: this.spacing,
      steps_offset: this.stepsOffset,
    });
    this.reset();
  }

  get timesteps(): number[] {
    return this.ts.slice();
  }

  setTimesteps(n: number): number[] {
    const N = this.sched.numTrainTimesteps;
    // searchsorted(flip(lambda_t), lambda_min_clipped): number of λ values (ascending) below the threshold.
    let clipped = 0;
    for (let i = N - 1; i >= 0 && this.tab.lambdaT[i]! < this.lambdaMinClipped; i--) clipped++;
    const last = N - clipped;
    this.ts = multistepTimesteps('DPM-Solver++.setTimesteps', this.spacing, n, N, last, this.stepsOffset, last);
    this.reset();
    return this.ts.slice();
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  reset(): void {
    this.modelOutputs = new Array<Float64Array | null>(this.solverOrder).fill(null);
    this.lowerOrderNums = 0;
  }

  private convertModelOutput(out: Float32Array, t: number, x: Float32Array): Float64Array {
    const a = this.tab.alphaT[t]!;
    const s = this.tab.sigmaT[t]!;
    const m = new Float64Array(out.length);
    if (this.predictionType === 'epsilon') for (let i = 0; i < m.length; i++) m[i] = (x[i]! - s * out[i]!) / a;
    else if (this.predictionType === 'v_prediction') for (let i = 0; i < m.length; i++) m[i] = a * x[i]! - s * out[i]!;
    else for (let i = 0; i < m.length; i++) m[i] = out[i]!;
    return m;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, _noise?: NoiseArg): StepResult {
    if (this.ts.length === 0) throw new XpsrError(ERR_INVALID_ARGUMENT, 'DPM-Solver++.step: call setTimesteps() first');
    checkSameLength('DPM-Solver++.step', modelOutput, sample, 'modelOutput', 'sample');
    const idx = this.ts.indexOf(t);
    if (idx < 0) throw new XpsrError(ERR_INVALID_ARGUMENT, `DPM-Solver++.step: timestep ${String(t)} is not in the schedule [${this.ts.join(', ')}]`);
    const len = this.ts.length;
    const prevT = idx === len - 1 ? 0 : this.ts[idx + 1]!;
    const lowerFinal = idx === len - 1 && this.lowerOrderFinal && len < 15;
    const lowerSecond = idx === len - 2 && this.lowerOrderFinal && len < 15;

    const m = this.convertModelOutput(modelOutput, t, sample);
    for (let i = 0; i < this.solverOrder - 1; i++) this.modelOutputs[i] = this.modelOutputs[i + 1]!;
    this.modelOutputs[this.solverOrder - 1] = m;

    const { alphaT, sigmaT, lambdaT } = this.tab;
    const n = sample.length;
    const out = new Float32Array(n);
    const lamT = lambdaT[prevT]!;
    const alT = alphaT[prevT]!;
    const sgT = sigmaT[prevT]!;
    const lamS0 = lambdaT[t]!;
    const h = f32(lamT - lamS0);
    const E = f32(torchExpF32(-h) - 1);
    const cx = f32(sgT / sigmaT[t]!);
    const cm = f32(alT * E);

    if (this.solverOrder === 1 || this.lowerOrderNums < 1 || lowerFinal) {
      for (let i = 0; i < n; i++) out[i] = cx * sample[i]! - cm * m[i]!;
    } else if (this.solverOrder === 2 || this.lowerOrderNums < 2 || lowerSecond) {
      const s1 = this.ts[idx - 1]!;
      const m0 = m;
      const m1 = this.modelOutputs[this.solverOrder - 2]!;
      const h0 = f32(lamS0 - lambdaT[s1]!);
      const r0 = f32(h0 / h);
      const inv = f32(1 / r0);
      if (this.solverType === 'midpoint') {
        const half = f32(0.5 * cm);
        for (let i = 0; i < n; i++) {
          const d1 = inv * (m0[i]! - m1[i]!);
          out[i] = cx * sample[i]! - cm * m0[i]! - half * d1;
        }
      } else {
        const ch = f32(alT * f32(f32(E / h) + 1));
        for (let i = 0; i < n; i++) {
          const d1 = inv * (m0[i]! - m1[i]!);
          out[i] = cx * sample[i]! - cm * m0[i]! + ch * d1;
        }
      }
    } else {
      const s1 = this.ts[idx - 1]!;
      const s2 = this.ts[idx - 2]!;
      const m0 = m;
      const m1 = this.modelOutputs[this.solverOrder - 2]!;
      const m2 = this.modelOutputs[this.solverOrder - 3]!;
      const lamS1 = lambdaT[s1]!;
      const lamS2 = lambdaT[s2]!;
      const h0 = f32(lamS0 - lamS1);
      const h1 = f32(lamS1 - lamS2);
      const r0 = f32(h0 / h);
      const r1 = f32(h1 / h);
      const inv0 = f32(1 / r0);
      const inv1 = f32(1 / r1);
      const r01 = f32(r0 + r1);
      const cD1 = f32(r0 / r01);
      const cD2 = f32(1 / r01);
      const c1 = f32(alT * f32(f32(E / h) + 1));
      const c2 = f32(alT * f32(f32(f32(E + h) / f32(h * h)) - 0.5));
      for (let i = 0; i < n; i++) {
        const d10 = inv0 * (m0[i]! - m1[i]!);
        const d11 = inv1 * (m1[i]! - m2[i]!);
        const d1 = d10 + cD1 * (d10 - d11);
        const d2 = cD2 * (d10 - d11);
        out[i] = cx * sample[i]! - cm * m0[i]! + c1 * d1 - c2 * d2;
      }
    }
    if (this.lowerOrderNums < this.solverOrder) this.lowerOrderNums++;
    return { prevSample: out };
  }

  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    return addNoiseImpl(this.alphasCumprod, original, noise, t, 'DPM-Solver++');
  }
}
