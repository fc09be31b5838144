/**
 * Small float32 tensor helpers for the pipeline (NCHW). Arithmetic mirrors torch float32: every
 * elementwise result is rounded to float32 (Math.fround) so the TS side matches the official code.
 */
import type { Tensor } from '../engine/engine.js';
import { XpsrError } from '../errors.js';

/** Concatenates tensors [n_i, ...rest] (the same rest) along the batch axis. */
export function catBatch(parts: Tensor[]): Tensor {
  const rest = parts[0].shape.slice(1);
  const rowSize = rest.reduce((a, b) => a * b, 1);
  const rows = parts.reduce((a, p) => a + p.shape[0], 0);
  const out = new Float32Array(rowSize * rows);
  let o = 0;
  for (const p of parts) {
    if (p.shape.length !== rest.length + 1 || p.shape.slice(1).some((d, i) => d !== rest[i]) || p.data.length !== p.shape[0] * rowSize)
      throw new XpsrError('ERR_SHAPE_MISMATCH', 'catBatch: parts differ in shape');
    out.set(p.data, o);
    o += p.data.length;
  }
  return { shape: [rows, ...rest], data: out };
}

/** Repeats a [1, ...] tensor n times along the batch. */
export function repeatBatch(t: Tensor, n: number): Tensor {
  return catBatch(Array.from({ length: n }, () => t));
}

/** Crops the spatial window [y, y+h) x [x, x+w) of an NCHW tensor. */
export function cropNCHW(t: Tensor, y: number, x: number, h: number, w: number): Tensor {
  const [N, C, H, W] = t.shape;
  const out = new Float32Array(N * C * h * w);
  let o = 0;
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let r = 0; r < h; r++) {
        const base = ((n * C + c) * H + y + r) * W + x;
        out.set(t.data.subarray(base, base + w), o);
        o += w;
      }
  return { shape: [N, C, h, w], data: out };
}

/** x * s in float32. */
export function scaleF32(x: Float32Array, s: number): Float32Array {
  const out = new Float32Array(x.length);
  const f = Math.fround(s);
  for (let i = 0; i < x.length; i++) out[i] = Math.fround(x[i] * f);
  return out;
}

/** x / s in float32 (torch divides; not the same as multiplying by 1/s). */
export function divF32(x: Float32Array, s: number): Float32Array {
  const out = new Float32Array(x.length);
  const f = Math.fround(s);
  for (let i = 0; i < x.length; i++) out[i] = Math.fround(x[i] / f);
  return out;
}

export function assertFinite(x: Float32Array, what: string): void {
  for (let i = 0; i < x.length; i++)
    if (!Number.isFinite(x[i]))
      throw new XpsrError('ERR_WEIGHTS_INVALID', `${what} contains NaN or Inf (element ${i}): the weights hold non-finite or out-of-range values`);
}
