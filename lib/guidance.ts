/**
 * Classifier-free guidance as the XPSR pipeline applies it (docs/architecture.md §7.4):
 * `ε = ε_u + g·(ε_c − ε_u)` where row 0 of the CFG batch is the unconditional (negative-prompt) prediction
 * and row 1 the conditional one.
 *
 * Arithmetic mirrors PyTorch on float32 tensors: three separate element-wise ops, each rounded to float32
 * (`d = f(ε_c − ε_u)`, `m = f(f32(g)·d)`, `ε = f(ε_u + m)`), so results equal torch's bit for bit.
 * `precision: 'float64'` instead evaluates the formula in float64 and rounds once (what a float64 reference
 * run produces).
 */

import { ERR_INVALID_ARGUMENT, ERR_SHAPE_MISMATCH, XpsrError } from './errors.js';

export interface GuidanceOptions {
  /** 'float32' (default, torch float32 semantics) or 'float64'. */
  precision?: 'float32' | 'float64';
  /** Destination array (length = half the input); allocated when omitted. May not alias the input. */
  out?: Float32Array;
}

function checkScale(scale: number): void {
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new XpsrError(ERR_INVALID_ARGUMENT, `applyGuidance: guidance scale must be a finite number, got ${String(scale)}`);
  }
}

/**
 * Guidance on separate unconditional / conditional predictions of equal length.
 * @returns ε_u + scale·(ε_c − ε_u) as a new Float32Array (or `opts.out`).
 */
export function applyGuidancePair(uncond: Float32Array, cond: Float32Array, scale: number, opts: GuidanceOptions = {}): Float32Array {
  checkScale(scale);
  if (uncond.length !== cond.length) {
    throw new XpsrError(
      ERR_SHAPE_MISMATCH,
      `applyGuidance: unconditional (${uncond.length}) and conditional (${cond.length}) predictions differ in size`,
    );
  }
  const n = uncond.length;
  const out = opts.out ?? new Float32Array(n);
  if (out.length !== n) throw new XpsrError(ERR_SHAPE_MISMATCH, `applyGuidance: out has ${out.length} values, expected ${n}`);
  if (opts.precision === 'float64') {
    for (let i = 0; i < n; i++) out[i] = uncond[i]! + scale * (cond[i]! - uncond[i]!);
  } else {
    const f = Math.fround;
    const g = f(scale);
    for (let i = 0; i < n; i++) {
      const u = uncond[i]!;
      out[i] = u + f(g * f(cond[i]! - u));
    }
  }
  return out;
}

/**
 * Guidance on a CFG batch of two rows stored back to back (`[uncond | cond]`, e.g. a (2, 4, h, w) tensor).
 * @returns the guided prediction, half the input length.
 */
export function applyGuidance(uncondAndCond: Float32Array, scale: number, opts: GuidanceOptions = {}): Float32Array {
  if (!(uncondAndCond instanceof Float32Array) || uncondAndCond.length % 2 !== 0) {
    throw new XpsrError(
      ERR_SHAPE_MISMATCH,
      `applyGuidance: expected a Float32Array holding 2 rows (even length), got ${uncondAndCond?.length ?? String(uncondAndCond)} values`,
    );
  }
  const half = uncondAndCond.length / 2;
  return applyGuidancePair(uncondAndCond.subarray(0, half), uncondAndCond.subarray(half), scale, opts);
}
