/**
 * Reproducible Gaussian noise for the diffusion pipeline.
 *
 * ## NoiseSource: the stream, fully specified
 *
 * The k-th value (k = 0, 1, 2, …) of the stream for seed `S` and stream id `D` is defined as follows.
 * 1. Key: the 64-bit seed `S mod 2^64` split into two 32-bit words `key = [S & 0xffffffff, S >>> 32]`.
 * 2. Block `j = ⌊k/2⌋` is Philox4x32-10 (Salmon et al., SC'11; Random123) applied to the 128-bit counter
 *    `[j mod 2^32, ⌊j / 2^32⌋, D mod 2^32, ⌊D / 2^32⌋]` with `key`: 10 rounds of
 *    `(hi0, lo0) = mulhilo(0xD2511F53, c0)`, `(hi1, lo1) = mulhilo(0xCD9E8D57, c2)`,
 *    `c = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0]`, the key being bumped by `(0x9E3779B9, 0xBB67AE85)`
 *    (mod 2^32) between rounds. Output words `x0..x3`.
 * 3. Uniforms with 53 random bits: `a = ((x0 >>> 5)·2^26 + (x1 >>> 6)) / 2^53`, `b = ((x2 >>> 5)·2^26 + (x3 >>> 6)) / 2^53`;
 *    `u1 = 1 − a ∈ (0, 1]`, `u2 = b ∈ [0, 1)`.
 * 4. Box–Muller: `r = √(−2·ln u1)`, `θ = 2π·u2`; value `2j` is `float32(r·cos θ)`, value `2j+1` is `float32(r·sin θ)`.
 *
 * `ln`, `cos` and `sin` are evaluated by the fixed algorithms of this file ({@link detLog}, {@link detSinCosTurns}),
 * built only from IEEE-754 double `+ − × ÷ √` (no platform libm), so the stream is identical on every platform,
 * JavaScript engine and version (a C/C++ port must use the same formulas with FP contraction disabled).
 * `normal(n)` hands out values k = position … position + n − 1, so `normal(3)` + `normal(5)` equals `normal(8)`.
 *
 * ## ReplayNoise
 * Hands out pre-recorded tensors in order (e.g. the `noise.NN` tensors of a reference fixture), failing loudly
 * when asked for more draws than were recorded or for a different size.
 */

import { ERR_INVALID_ARGUMENT, ERR_SHAPE_MISMATCH, XpsrError } from './errors.js';

/** Anything that can hand out `n` N(0, 1) values (accepted by the schedulers' `step`). */
export interface NoiseProvider {
  normal(n: number): Float32Array;
}

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** High 32 bits of the 64-bit product of two uint32 values (exact, via 16-bit limbs). */
function mulhi32(a: number, b: number): number {
  const al = a & 0xffff,
    ah = a >>> 16,
    bl = b & 0xffff,
    bh = b >>> 16;
  const ll = al * bl,
    lh = al * bh,
    hl = ah * bl,
    hh = ah * bh;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (hh + Math.floor(lh / 65536) + Math.floor(hl / 65536) + Math.floor(mid / 65536)) >>> 0;
}

/** Philox4x32-10 block function: returns the 4 output words for `counter` and `key`. */
export function philox4x32(counter: readonly [number, number, number, number], key: readonly [number, number]): [number, number, number, number] {
  let c0 = counter[0] >>> 0,
    c1 = counter[1] >>> 0,
    c2 = counter[2] >>> 0,
    c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0,
    k1 = key[1] >>> 0;
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi32(M0, c0),
      lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2),
      lo1 = Math.imul(M1, c2) >>> 0;
    const n0 = (hi1 ^ c1 ^ k0) >>> 0,
      n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return [c0, c1, c2, c3];
}

const LN2 = 0.6931471805599453;
const SQRT1_2 = 0.7071067811865476;
const TWO_PI_OVER_4 = 1.5707963267948966;
const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // index of the high word

/**
 * Natural logarithm of a positive, finite, normal double using only `+ − × ÷` and exact bit manipulation:
 * x = m·2^e with m ∈ [√½, √2), s = (m − 1)/(m + 1), ln x = e·ln 2 + 2·(s + s³/3 + … + s²³/23) (Horner).
 * Accurate to a few ulp; identical results everywhere.
 */
export function detLog(x: number): number {
  f64[0] = x;
  let e = ((u32[HI]! >>> 20) & 0x7ff) - 1023;
  u32[HI] = (u32[HI]! & 0x800fffff) | 0x3ff00000; // m ∈ [1, 2)
  let m = f64[0]!;
  if (m > 2 * SQRT1_2) {
    m = m / 2;
    e += 1;
  }
  const s = (m - 1) / (m + 1);
  const s2 = s * s;
  let p = 1 / 23;
  for (let k = 21; k >= 1; k -= 2) p = p * s2 + 1 / k;
  return e * LN2 + 2 * s * p;
}

/**
 * cos(2πu) and sin(2πu) for u ∈ [0, 1) using only `+ − × ÷`: quarter-turn reduction (exact in binary),
 * x = f·π/2 with f ∈ [−½, ½], Taylor polynomials to x¹⁷ / x¹⁶, quadrant rotation.
 */
export function detSinCosTurns(u: number): [number, number] {
  const t = u * 4;
  let q = Math.floor(t);
  let fr = t - q;
  if (fr > 0.5) {
    fr -= 1;
    q += 1;
  }
  const x = fr * TWO_PI_OVER_4;
  const x2 = x * x;
  // sin x = x·(1 − x²/3! + x⁴/5! − …), cos x = 1 − x²/2! + x⁴/4! − …
  let sp = 0;
  let cp = 0;
  for (let k = 8; k >= 1; k--) {
    sp = (1 - sp * x2) / (2 * k * (2 * k + 1));
    cp = (1 - cp * x2) / ((2 * k - 1) * (2 * k));
  }
  const s = x * (1 - sp * x2);
  const c = 1 - cp * x2;
  switch (((q % 4) + 4) % 4) {
    case 0:
      return [c, s];
    case 1:
      return [-s, c];
    case 2:
      return [-c, -s];
    default:
      return [s, -c];
  }
}

function toU64(seed: number | bigint, what: string): bigint {
  if (typeof seed === 'bigint') return BigInt.asUintN(64, seed);
  if (typeof seed === 'number' && Number.isSafeInteger(seed)) return BigInt.asUintN(64, BigInt(seed));
  throw new XpsrError(ERR_INVALID_ARGUMENT, `NoiseSource: ${what} must be an integer (number or bigint), got ${String(seed)}`);
}

/** Seeded, counter-based N(0, 1) generator (Philox4x32-10 + Box–Muller); see the module documentation. */
export class NoiseSource implements NoiseProvider {
  /** The seed reduced to 64 bits. */
  readonly seed: bigint;
  /** The stream id reduced to 64 bits. */
  readonly stream: bigint;
  private readonly key: [number, number];
  private readonly d0: number;
  private readonly d1: number;
  private pos = 0;

  /**
   * @param seed   any integer; reduced mod 2^64.
   * @param stream optional independent sub-stream id (default 0), reduced mod 2^64.
   */
  constructor(seed: number | bigint, stream: number | bigint = 0) {
    this.seed = toU64(seed, 'seed');
    this.stream = toU64(stream, 'stream');
    this.key = [Number(this.seed & 0xffffffffn), Number(this.seed >> 32n)];
    this.d0 = Number(this.stream & 0xffffffffn);
    this.d1 = Number(this.stream >> 32n);
  }

  /** Number of values handed out so far (index of the next value). */
  get position(): number {
    return this.pos;
  }

  /** Moves to value index `k` (the next `normal` call starts there). */
  seek(k: number): void {
    if (!Number.isSafeInteger(k) || k < 0)
      throw new XpsrError(ERR_INVALID_ARGUMENT, `NoiseSource.seek: index must be a non-negative integer, got ${String(k)}`);
    this.pos = k;
  }

  /** The next `n` values of the stream as float32. */
  normal(n: number): Float32Array {
    if (!Number.isSafeInteger(n) || n < 0)
      throw new XpsrError(ERR_INVALID_ARGUMENT, `NoiseSource.normal: count must be a non-negative integer, got ${String(n)}`);
    const out = new Float32Array(n);
    let k = this.pos;
    let i = 0;
    while (i < n) {
      const j = Math.floor(k / 2);
      const [z0, z1] = this.pair(j);
      if (k % 2 === 0) {
        out[i++] = z0;
        k++;
        if (i < n) {
          out[i++] = z1;
          k++;
        }
      } else {
        out[i++] = z1;
        k++;
      }
    }
    this.pos = k;
    return out;
  }

  private pair(j: number): [number, number] {
    const x = philox4x32([j % 4294967296, Math.floor(j / 4294967296), this.d0, this.d1], this.key);
    const a = ((x[0] >>> 5) * 67108864 + (x[1] >>> 6)) / 9007199254740992;
    const b = ((x[2] >>> 5) * 67108864 + (x[3] >>> 6)) / 9007199254740992;
    const r = Math.sqrt(-2 * detLog(1 - a));
    const [c, s] = detSinCosTurns(b);
    return [Math.fround(r * c), Math.fround(r * s)];
  }
}

/**
 * Replays recorded noise tensors in order. `normal(n)` returns a copy of the next recorded tensor and throws
 * XpsrError ERR_INVALID_ARGUMENT when all recorded draws are used up, ERR_SHAPE_MISMATCH when `n` differs
 * from the recorded tensor's size.
 */
export class ReplayNoise implements NoiseProvider {
  private readonly draws: Float32Array[];
  private next = 0;

  /**
   * @param draws recorded tensors, in the order they will be requested.
   * @param label name used in error messages (e.g. the fixture file).
   */
  constructor(
    draws: Iterable<Float32Array>,
    readonly label = 'ReplayNoise',
  ) {
    this.draws = [...draws];
    this.draws.forEach((d, i) => {
      if (!(d instanceof Float32Array)) throw new XpsrError(ERR_INVALID_ARGUMENT, `${label}: recorded draw #${i} is not a Float32Array`);
    });
  }

  /**
   * Collects `<prefix>NN` tensors (numeric suffix, sorted numerically) from a tensor map, e.g. a fixture's
   * `noise.00`, `noise.01`, … Only float32 data is accepted.
   */
  static fromTensors(
    tensors: Map<string, { dtype: string; data: ArrayLike<number> | ArrayLike<bigint> }>,
    prefix = 'noise.',
    label?: string,
  ): ReplayNoise {
    const found: Array<[number, Float32Array]> = [];
    for (const [k, t] of tensors) {
      if (!k.startsWith(prefix)) continue;
      const rest = k.slice(prefix.length);
      if (!/^\d+$/.test(rest)) continue;
      if (t.dtype !== 'F32' || !(t.data instanceof Float32Array)) {
        throw new XpsrError(ERR_INVALID_ARGUMENT, `${label ?? 'ReplayNoise'}: tensor "${k}" is ${t.dtype}, expected F32`);
      }
      found.push([Number(rest), t.data]);
    }
    found.sort((a, b) => a[0] - b[0]);
    return new ReplayNoise(
      found.map((e) => e[1]),
      label ?? `ReplayNoise(${prefix}*)`,
    );
  }

  /** Number of draws handed out so far. */
  get consumed(): number {
    return this.next;
  }

  /** Number of recorded draws not yet handed out. */
  get remaining(): number {
    return this.draws.length - this.next;
  }

  normal(n: number): Float32Array {
    if (this.next >= this.draws.length) {
      throw new XpsrError(
        ERR_INVALID_ARGUMENT,
        `${this.label}: draw #${this.next} requested (${n} values) but only ${this.draws.length} draws were recorded`,
        { requested: this.next, recorded: this.draws.length },
      );
    }
    const d = this.draws[this.next]!;
    if (d.length !== n) {
      throw new XpsrError(ERR_SHAPE_MISMATCH, `${this.label}: draw #${this.next} has ${d.length} values but ${n} were requested`, {
        draw: this.next,
        recorded: d.length,
        requested: n,
      });
    }
    this.next++;
    return d.slice();
  }

  /** Throws unless every recorded draw has been used (catches a pipeline that draws too little). */
  assertExhausted(): void {
    if (this.next !== this.draws.length) {
      throw new XpsrError(ERR_INVALID_ARGUMENT, `${this.label}: only ${this.next} of ${this.draws.length} recorded draws were used`, {
        consumed: this.next,
        recorded: this.draws.length,
      });
    }
  }
}
