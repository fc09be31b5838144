/**
 * Tensor comparison for parity reports: max_abs, max_rel (= max_abs / max|ref|), the tolerance and the
 * verdict. Tolerances (the parity method of docs/architecture.md §10): single modules max_abs <= 1e-4 * max(1, max|ref|)
 * in float32; pipelines 1e-3; uint8 images off by at most 1 in a small fraction of values.
 */
export interface ParityLine {
  component: string;
  tensor: string;
  maxAbs: number;
  maxRel: number;
  tol: number;
  pass: boolean;
  /** A reference tensor knowingly not computed (training-only heads): printed as SKIP, counted apart. */
  skipped?: boolean;
  note?: string;
}

export function compareFloat(
  component: string,
  tensor: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  relTol: number,
  absolute = false,
): ParityLine {
  if (got.length !== ref.length)
    return { component, tensor, maxAbs: Infinity, maxRel: Infinity, tol: 0, pass: false, note: `size ${got.length} vs ${ref.length}` };
  let maxRef = 0;
  let maxAbs = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = Number(ref[i]);
    maxRef = Math.max(maxRef, Math.abs(r));
    const d = Math.abs(Number(got[i]) - r);
    if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : d;
  }
  const tol = absolute ? relTol : relTol * Math.max(1, maxRef);
  return { component, tensor, maxAbs, maxRel: maxRef > 0 ? maxAbs / maxRef : maxAbs, tol, pass: maxAbs <= tol };
}

/** uint8 images: pass when no value is off by more than `maxDiff` and at most `maxFraction` differ. */
export function compareU8(component: string, tensor: string, got: Uint8Array, ref: Uint8Array, maxDiff = 1, maxFraction = 0.001): ParityLine {
  if (got.length !== ref.length)
    return { component, tensor, maxAbs: Infinity, maxRel: Infinity, tol: maxDiff, pass: false, note: `size ${got.length} vs ${ref.length}` };
  let worst = 0;
  let differing = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    if (d) differing++;
    worst = Math.max(worst, d);
  }
  const frac = differing / ref.length;
  return {
    component,
    tensor,
    maxAbs: worst,
    maxRel: frac,
    tol: maxDiff,
    pass: worst <= maxDiff && frac <= maxFraction,
    note: `${differing} of ${ref.length} values differ`,
  };
}

export function exactInts(component: string, tensor: string, got: ArrayLike<number>, ref: ArrayLike<number>): ParityLine {
  let bad = got.length === ref.length ? 0 : Math.max(got.length, ref.length);
  for (let i = 0; i < Math.min(got.length, ref.length); i++) if (Number(got[i]) !== Number(ref[i])) bad++;
  return { component, tensor, maxAbs: bad, maxRel: 0, tol: 0, pass: bad === 0, note: bad ? `${bad} values differ` : 'exact' };
}

export function formatLine(l: ParityLine): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toExponential(2) : String(x));
  if (l.skipped) return `SKIP  ${l.component.padEnd(22)} ${l.tensor.padEnd(52)} ${l.note ?? 'not computed'}`;
  return `${l.pass ? 'PASS' : 'FAIL'}  ${l.component.padEnd(22)} ${l.tensor.padEnd(52)} max_abs=${f(l.maxAbs)}  max_rel=${f(l.maxRel)}  tol=${f(l.tol)}${l.note ? `  (${l.note})` : ''}`;
}
