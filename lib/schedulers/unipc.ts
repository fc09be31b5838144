/**
 * UniPC multistep sampler (predictor UniP + corrector UniC), as diffusers 0.21.4 `UniPCMultistepScheduler`
 * (defaults: solver_order 2, bh2, predict_x0, lower_order_final, linspace spacing).
 *
 * Tables α_t, σ_t, λ_t and the timestep spacings are those of {@link DPMSolverMultistepScheduler} (UniPC uses
 * T = N for all spacings). Step at timestep index i (t = timesteps[i], t' = timesteps[i + 1] or 0):
 * 1. m = x₀ prediction of the model output at t (predict_x0; else the ε prediction), float64.
 * 2. Corrector (i > 0, not in `disable_corrector`): with the previous step's order p, s0 = previous t, m0 the
 *    previous m: x ← UniC(x_last, m0, m, order p) using ρ_c = solve(R, b) (float32; ρ_c = [0.5] for p = 1).
 * 3. History shift; order q = min(solver_order, len − i (lower_order_final), number of past outputs + 1).
 * 4. Predictor: x' = UniP(x, history, order q) with ρ_p = [0.5] for q = 2, solve(R[:-1,:-1], b[:-1]) for q ≥ 3.
 *
 * Coefficients (float32, `f()` = float32 rounding): h = f(λ_t − λ_s0), hh = −h (predict_x0), φ₁ = f(expm1(hh)),
 * B_h = φ₁ (bh2) or hh (bh1), r_k = f(f(λ_sk − λ_s0)/h), R[i][k] = r_k^i, b_i = f(f(φ_{i+1}·i!)/B_h) with the
 * recursion φ ← f(f(φ/hh) − f(1/(i+1)!)); ρ = {@link solveF32}(R, b); D1_k = (m_k − m0)/r_k (float64);
 * x' = f(σ_t/σ_s0)·x − f(α_t·φ₁)·m0 − f(α_t·B_h)·(Σ ρ_k·D1_k [+ ρ_last·(m_t − m0) in the corrector]).
 */

import { ERR_INVALID_ARGUMENT, ERR_UNSUPPORTED, XpsrError } from '../errors.js';
import { f32, makeNoiseSchedule, type NoiseSchedule } from './betas.js';
import { addNoiseImpl, checkSameLength, cleanConfig, isBool, isInt, isStr, opt, type NoiseArg, type Scheduler, type StepResult } from './common.js';
import { makeVpTables, multistepTimesteps, type VpTables } from './dpmpp.js';

/** diffusers UniPCMultistepScheduler config keys understood here. */
export interface UniPCConfig {
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: number[] | null;
  solver_order?: number;
  prediction_type?: 'epsilon' | 'v_prediction' | 'sample';
  predict_x0?: boolean;
  solver_type?: 'bh1' | 'bh2';
  lower_order_final?: boolean;
  disable_corrector?: number[];
  timestep_spacing?: 'linspace' | 'leading' | 'trailing';
  steps_offset?: number;
  [key: string]: unknown;
}

const PREDICTION_TYPES = ['epsilon', 'v_prediction', 'sample'];

/** float32 x^k as torch.pow(float32 tensor, k) computes it for small integer k. */
function powF32(x: number, k: number): number {
  if (k === 0) return 1;
  if (k === 1) return x;
  if (k === 2) return f32(x * x);
  if (k === 3) return f32(f32(x * x) * x);
  return f32(Math.pow(x, k));
}

/**
 * Solves A·x = b in float32 the way `torch.linalg.solve` does on CPU for a row-major A: LAPACK factorises the
 * column-major view, i.e. Aᵀ (`sgetrf`: partial pivoting, column scaled by the reciprocal pivot), then solves
 * with the transposed factors (`sgetrs` trans = 'T': Uᵀ·y = b forward with division by U's diagonal, Lᵀ·w = y
 * backward, x = Pᵀ·w). Each operation is rounded to float32.
 */
export function solveF32(A: number[][], b: number[]): number[] {
  const n = b.length;
  // M = Aᵀ
  const M: number[][] = [];
  for (let i = 0; i < n; i++) {
    const row: number[] = [];
    for (let j = 0; j < n; j++) row.push(f32(A[j]![i]!));
    M.push(row);
  }
  const perm: number[] = [];
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r]![c]!) > Math.abs(M[p]![c]!)) p = r;
    perm.push(p);
    if (M[p]![c] === 0) throw new XpsrError(ERR_INVALID_ARGUMENT, 'UniPC: singular coefficient matrix (repeated timesteps?)');
    if (p !== c) [M[p], M[c]] = [M[c]!, M[p]!];
    const inv = f32(1 / M[c]![c]!);
    for (let r = c + 1; r < n; r++) M[r]![c] = f32(M[r]![c]! * inv);
    for (let r = c + 1; r < n; r++) {
      for (let k = c + 1; k < n; k++) M[r]![k] = f32(M[r]![k]! - f32(M[r]![c]! * M[c]![k]!));
    }
  }
  // Uᵀ·y = b
  const y = b.map(f32);
  for (let i = 0; i < n; i++) {
    let t = y[i]!;
    for (let k = 0; k < i; k++) t = f32(t - f32(M[k]![i]! * y[k]!));
    y[i] = f32(t / M[i]![i]!);
  }
  // Lᵀ·w = y (unit diagonal)
  for (let i = n - 1; i >= 0; i--) {
    let t = y[i]!;
    for (let k = i + 1; k < n; k++) t = f32(t - f32(M[k]![i]! * y[k]!));
    y[i] = t;
  }
  // x = Pᵀ·w: undo the row interchanges in reverse order
  for (let c = n - 1; c >= 0; c--) {
    const p = perm[c]!;
    if (p !== c) [y[p], y[c]] = [y[c]!, y[p]!];
  }
  return y;
}

export class UniPCMultistepScheduler implements Scheduler {
  readonly name = 'unipc';
  readonly config: Readonly<Record<string, unknown>>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  readonly initNoiseSigma = 1;
  private readonly sched: NoiseSchedule;
  private readonly tab: VpTables;
  private readonly solverOrder: number;
  private readonly predictionType: string;
  private readonly predictX0: boolean;
  private readonly bh2: boolean;
  private readonly lowerOrderFinal: boolean;
  private readonly disableCorrector: number[];
  private readonly spacing: string;
  private readonly stepsOffset: number;
  private ts: number[] = [];
  private modelOutputs: Array<Float64Array | null> = [];
  private timestepList: Array<number | null> = [];
  private lowerOrderNums = 0;
  private lastSample: Float64Array | null = null;
  private thisOrder = 1;

  constructor(config: UniPCConfig = {}) {
    const cfg = cleanConfig(config);
    this.sched = makeNoiseSchedule(cfg as never);
    this.betas = this.sched.betas;
    this.alphasCumprod = this.sched.alphasCumprod;
    this.tab = makeVpTables(this.alphasCumprod);
    this.solverOrder = opt(cfg, 'solver_order', 2, isInt, 'an integer');
    if (this.solverOrder < 1 || this.solverOrder > 4) {
      throw new XpsrError(ERR_UNSUPPORTED, `UniPC: solver_order must be between 1 and 4, got ${this.solverOrder}`);
    }
    this.predictionType = opt(cfg, 'prediction_type', 'epsilon', isStr, 'a string');
    if (!PREDICTION_TYPES.includes(this.predictionType)) {
      throw new XpsrError(
        ERR_UNSUPPORTED,
        `UniPC: prediction_type ${JSON.stringify(this.predictionType)} is not supported (${PREDICTION_TYPES.join(', ')})`,
      );
    }
    this.predictX0 = opt(cfg, 'predict_x0', true, isBool, 'a boolean');
    let solverType = opt(cfg, 'solver_type', 'bh2', isStr, 'a string');
    if (['midpoint', 'heun', 'logrho'].includes(solverType)) solverType = 'bh2';
    if (solverType !== 'bh1' && solverType !== 'bh2') {
      throw new XpsrError(ERR_UNSUPPORTED, `UniPC: solver_type ${JSON.stringify(solverType)} is not supported (bh1, bh2)`);
    }
    this.bh2 = solverType === 'bh2';
    if (opt(cfg, 'thresholding', false, isBool, 'a boolean')) {
      throw new XpsrError(ERR_UNSUPPORTED, 'UniPC: thresholding=true is not supported');
    }
    if (opt(cfg, 'use_karras_sigmas', false, isBool, 'a boolean')) {
      throw new XpsrError(ERR_UNSUPPORTED, 'UniPC: use_karras_sigmas=true is not supported');
    }
    if (cfg['solver_p'] != null) {
      throw new XpsrError(ERR_UNSUPPORTED, 'UniPC: solver_p (an external predictor scheduler) is not supported');
    }
    this.lowerOrderFinal = opt(cfg, 'lower_order_final', true, isBool, 'a boolean');
    this.disableCorrector = opt(cfg, 'disable_corrector', [] as number[], (v) => Array.isArray(v) && v.every(isInt), 'an array of step indices');
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
      predict_x0: this.predictX0,
      solver_type: solverType,
      lower_order_final: this.lowerOrderFinal,
      disable_corrector: this.disableCorrector.slice(),
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
    this.ts = multistepTimesteps('UniPC.setTimesteps', this.spacing, n, N, N, this.stepsOffset, N);
    this.reset();
    return this.ts.slice();
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  reset(): void {
    this.modelOutputs = new Array<Float64Array | null>(this.solverOrder).fill(null);
    this.timestepList = new Array<number | null>(this.solverOrder).fill(null);
    this.lowerOrderNums = 0;
    this.lastSample = null;
    this.thisOrder = 1;
  }

  private convertModelOutput(out: Float32Array, t: number, x: Float32Array): Float64Array {
    const a = this.tab.alphaT[t]!;
    const s = this.tab.sigmaT[t]!;
    const m = new Float64Array(out.length);
    const pt = this.predictionType;
    if (this.predictX0) {
      if (pt === 'epsilon') for (let i = 0; i < m.length; i++) m[i] = (x[i]! - s * out[i]!) / a;
      else if (pt === 'v_prediction') for (let i = 0; i < m.length; i++) m[i] = a * x[i]! - s * out[i]!;
      else for (let i = 0; i < m.length; i++) m[i] = out[i]!;
    } else {
      if (pt === 'epsilon') for (let i = 0; i < m.length; i++) m[i] = out[i]!;
      else if (pt === 'v_prediction') for (let i = 0; i < m.length; i++) m[i] = a * out[i]! + s * x[i]!;
      else for (let i = 0; i < m.length; i++) m[i] = (x[i]! - a * out[i]!) / s;
    }
    return m;
  }

  /**
   * Shared UniP / UniC machinery. `s0` = newest history timestep, `t` = target timestep, `order` = solver order;
   * history entries −(i+1) for i = 1..order−1 give the r_k and D1_k.
   */
  private coefficients(s0: number, t: number, order: number) {
    const { alphaT, sigmaT, lambdaT } = this.tab;
    const lamS0 = lambdaT[s0]!;
    const h = f32(lambdaT[t]! - lamS0);
    const L = this.solverOrder;
    const rks: number[] = [];
    const hist: Float64Array[] = [];
    for (let i = 1; i < order; i++) {
      const si = this.timestepList[L - 1 - i];
      const mi = this.modelOutputs[L - 1 - i];
      if (si == null || mi == null) throw new XpsrError(ERR_INVALID_ARGUMENT, 'UniPC: missing history (internal error)');
      rks.push(f32(f32(lambdaT[si]! - lamS0) / h));
      hist.push(mi);
    }
    rks.push(1);
    const hh = this.predictX0 ? -h : h;
    const hPhi1 = f32(Math.expm1(hh));
    let hPhiK = f32(f32(hPhi1 / hh) - 1);
    let fact = 1;
    const Bh = this.bh2 ? f32(Math.expm1(hh)) : hh;
    const R: number[][] = [];
    const b: number[] = [];
    for (let i = 1; i <= order; i++) {
      R.push(rks.map((r) => powF32(r, i - 1)));
      b.push(f32(f32(hPhiK * fact) / Bh));
      fact *= i + 1;
      hPhiK = f32(f32(hPhiK / hh) - f32(1 / fact));
    }
    let cx: number, cm: number, cr: number;
    if (this.predictX0) {
      cx = f32(sigmaT[t]! / sigmaT[s0]!);
      cm = f32(alphaT[t]! * hPhi1);
      cr = f32(alphaT[t]! * Bh);
    } else {
      cx = f32(alphaT[t]! / alphaT[s0]!);
      cm = f32(sigmaT[t]! * hPhi1);
      cr = f32(sigmaT[t]! * Bh);
    }
    return { rks, hist, R, b, cx, cm, cr };
  }

  /** UniC: corrects `thisSample` (x at `t`) from the last sample, using this step's model output `mT`. */
  private corrector(mT: Float64Array, t: number, last: Float64Array, order: number): Float64Array {
    const L = this.solverOrder;
    const s0 = this.timestepList[L - 1]!;
    const m0 = this.modelOutputs[L - 1]!;
    const { rks, hist, R, b, cx, cm, cr } = this.coefficients(s0, t, order);
    const rhos = order === 1 ? [0.5] : solveF32(R, b);
    const n = last.length;
    const out = new Float64Array(n);
    const K = hist.length;
    for (let i = 0; i < n; i++) {
      let corr = 0;
      for (let k = 0; k < K; k++) corr += rhos[k]! * ((hist[k]![i]! - m0[i]!) / rks[k]!);
      const xt = cx * last[i]! - cm * m0[i]!;
      out[i] = xt - cr * (corr + rhos[K]! * (mT[i]! - m0[i]!));
    }
    return out;
  }

  /** UniP: predicts x at `t` from `x` at the newest history timestep. */
  private predictor(t: number, x: Float64Array, order: number): Float32Array {
    const L = this.solverOrder;
    const s0 = this.timestepList[L - 1]!;
    const m0 = this.modelOutputs[L - 1]!;
    const { rks, hist, R, b, cx, cm, cr } = this.coefficients(s0, t, order);
    const K = hist.length;
    let rhos: number[] = [];
    if (K === 1) rhos = [0.5];
    else if (K > 1)
      rhos = solveF32(
        R.slice(0, K).map((row) => row.slice(0, K)),
        b.slice(0, K),
      );
    const n = x.length;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let res = 0;
      for (let k = 0; k < K; k++) res += rhos[k]! * ((hist[k]![i]! - m0[i]!) / rks[k]!);
      const xt = cx * x[i]! - cm * m0[i]!;
      out[i] = K > 0 ? xt - cr * res : xt;
    }
    return out;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, _noise?: NoiseArg): StepResult {
    if (this.ts.length === 0) throw new XpsrError(ERR_INVALID_ARGUMENT, 'UniPC.step: call setTimesteps() first');
    checkSameLength('UniPC.step', modelOutput, sample, 'modelOutput', 'sample');
    const idx = this.ts.indexOf(t);
    if (idx < 0) throw new XpsrError(ERR_INVALID_ARGUMENT, `UniPC.step: timestep ${String(t)} is not in the schedule [${this.ts.join(', ')}]`);
    if (this.lastSample !== null && this.lastSample.length !== sample.length) {
      throw new XpsrError(ERR_INVALID_ARGUMENT, 'UniPC.step: sample size changed between steps (call reset())');
    }
    const useCorrector = idx > 0 && !this.disableCorrector.includes(idx - 1) && this.lastSample !== null;
    const m = this.convertModelOutput(modelOutput, t, sample);
    let x: Float64Array = Float64Array.from(sample);
    if (useCorrector) x = this.corrector(m, t, this.lastSample!, this.thisOrder);

    const len = this.ts.length;
    const prevT = idx === len - 1 ? 0 : this.ts[idx + 1]!;
    const L = this.solverOrder;
    for (let i = 0; i < L - 1; i++) {
      this.modelOutputs[i] = this.modelOutputs[i + 1]!;
      this.timestepList[i] = this.timestepList[i + 1]!;
    }
    this.modelOutputs[L - 1] = m;
    this.timestepList[L - 1] = t;
    const order = this.lowerOrderFinal ? Math.min(L, len - idx) : L;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1);
    this.lastSample = x;
    const prev = this.predictor(prevT, x, this.thisOrder);
    if (this.lowerOrderNums < L) this.lowerOrderNums++;
    return { prevSample: prev };
  }

  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    return addNoiseImpl(this.alphasCumprod, original, noise, t, 'UniPC');
  }
}
