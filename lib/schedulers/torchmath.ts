/**
 * Bit-exact emulation of PyTorch's CPU float32 `exp` (x86-64 build).
 *
 * PyTorch evaluates float32 `torch.exp` on CPU — even on 0-dim tensors — through its VML wrapper, i.e.
 * SLEEF's `Sleef_expf8_u10` (AVX2 + FMA), which is accurate to 1 ulp but NOT correctly rounded (about 9% of
 * inputs differ from `Math.fround(Math.exp(x))` by one ulp). DPM-Solver++ computes `exp(−h) − 1` in float32,
 * which amplifies such an ulp ×2 through cancellation; emulating SLEEF makes our coefficients equal to the
 * reference's. The algorithm (Cody–Waite reduction by ln 2 split in two float32 constants, degree-6
 * polynomial, fused multiply-adds, scaling by 2^q) is SLEEF's published single-precision exp.
 */

import { f32, fma32 } from './betas.js';

const R_LN2 = f32(1.442695040888963407359924681001892137426645954152985934135449406931);
const L2U = f32(-0.693145751953125);
const L2L = f32(-1.428606765330187045e-6);
const C = [0.00139304355252534151077271, 0.00833336077630519866943359, 0.0416664853692054748535156, 0.166666671633720397949219, 0.5].map(f32);
const C0 = f32(0.000198527617612853646278381);

/** `torch.exp` on a float32 value, CPU (SLEEF expf u10 with FMA). Input and output are float32 values. */
export function torchExpF32(x: number): number {
  const d = f32(x);
  if (Number.isNaN(d)) return NaN;
  if (d < -104) return 0;
  if (d > 1e38) return Infinity;
  const q = roundHalfEvenInt(f32(d * R_LN2));
  let s = fma32(q, L2U, d);
  s = fma32(q, L2L, s);
  let u = C0;
  for (const c of C) u = fma32(u, s, c);
  u = f32(1 + fma32(f32(s * s), u, s));
  // ldexp in two halves as SLEEF's vldexp2 does (avoids intermediate overflow/underflow of 2^q).
  const q1 = q >> 1;
  return f32(f32(u * 2 ** q1) * 2 ** (q - q1));
}

/** Round to nearest integer, ties to even (the x86 `vcvtps2dq` default rounding). */
function roundHalfEvenInt(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : r;
}
