/**
 * Strict UTF-8 decoding for the mojibake repair in `ftfy.ts`, plus the lenient "UTF-8 variants" decoding
 * (CESU-8 surrogate pairs and Java's two-byte NUL) that ftfy falls back to when re-decoded bytes contain
 * 0xC0 or 0xED.
 *
 * Both return `null` instead of throwing when the bytes are not decodable, because "does not decode" is an
 * ordinary outcome for the repair heuristics.
 */

/** Accumulates code points into a string without building huge argument lists. */
class CodePointSink {
  private parts: string[] = [];
  private buf: number[] = [];

  push(cp: number): void {
    this.buf.push(cp);
    if (this.buf.length >= 4096) this.flush();
  }

  private flush(): void {
    if (this.buf.length > 0) {
      this.parts.push(String.fromCodePoint(...this.buf));
      this.buf = [];
    }
  }

  toString(): string {
    this.flush();
    return this.parts.join('');
  }
}

/**
 * Length of the well-formed UTF-8 sequence that starts at `i` (1..4), or 0 when the bytes there are not
 * well-formed (invalid lead byte, bad continuation, overlong form, surrogate, above U+10FFFF, truncated).
 * This is the Unicode "well-formed byte sequence" table (Unicode ch. 3, table 3-7).
 */
function sequenceLength(b: Uint8Array, i: number): number {
  const n = b.length;
  const b0 = b[i]!;
  if (b0 < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => i + k < n && b[i + k]! >= lo && b[i + k]! <= hi;
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0;
  if (b0 >= 0xe0 && b0 <= 0xef) {
    const lo = b0 === 0xe0 ? 0xa0 : 0x80;
    const hi = b0 === 0xed ? 0x9f : 0xbf;
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    const lo = b0 === 0xf0 ? 0x90 : 0x80;
    const hi = b0 === 0xf4 ? 0x8f : 0xbf;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

function codePointAt(b: Uint8Array, i: number, len: number): number {
  switch (len) {
    case 1:
      return b[i]!;
    case 2:
      return ((b[i]! & 0x1f) << 6) | (b[i + 1]! & 0x3f);
    case 3:
      return ((b[i]! & 0x0f) << 12) | ((b[i + 1]! & 0x3f) << 6) | (b[i + 2]! & 0x3f);
    default:
      return ((b[i]! & 0x07) << 18) | ((b[i + 1]! & 0x3f) << 12) | ((b[i + 2]! & 0x3f) << 6) | (b[i + 3]! & 0x3f);
  }
}

/** Strict UTF-8 decoding (no replacement characters): the string, or null if any byte is ill-formed. */
export function decodeUtf8Strict(bytes: Uint8Array): string | null {
  const out = new CodePointSink();
  for (let i = 0; i < bytes.length; ) {
    const len = sequenceLength(bytes, i);
    if (len === 0) return null;
    out.push(codePointAt(bytes, i, len));
    i += len;
  }
  return out.toString();
}

const inRange = (v: number | undefined, lo: number, hi: number): boolean => v !== undefined && v >= lo && v <= hi;

/**
 * Lenient decoding of "UTF-8 as some programs write it": standard UTF-8, plus
 *  - `C0 80` (Java's modified UTF-8 for U+0000) decodes to U+0000;
 *  - a CESU-8 pair `ED A0..AF 80..BF ED B0..BF 80..BF` (a UTF-16 surrogate pair, each half encoded as if it
 *    were a character) decodes to the supplementary character it stands for.
 * A lone encoded surrogate is still an error.
 *
 * Two end-of-input quirks of the Python reference decoder (whose pattern anchors `$` also match before a
 * final newline) are reproduced on purpose so that results stay identical: a `C0` followed by a final
 * `0A` decodes to U+0000 (the newline is consumed), and a CESU-8 pair whose last byte is a final `0A` is
 * accepted, using that byte's low six bits.
 */
export function decodeUtf8Variants(bytes: Uint8Array): string | null {
  const n = bytes.length;
  const out = new CodePointSink();
  for (let i = 0; i < n; ) {
    const b0 = bytes[i]!;
    if (b0 === 0xc0) {
      const b1 = bytes[i + 1];
      if (b1 === 0x80 || (b1 === 0x0a && i + 2 === n)) {
        out.push(0);
        i += 2;
        continue;
      }
      return null;
    }
    if (b0 === 0xed && inRange(bytes[i + 1], 0xa0, 0xbf)) {
      const b5 = bytes[i + 5];
      const lastOk = inRange(b5, 0x80, 0xbf) || (b5 === 0x0a && i + 6 === n);
      if (
        inRange(bytes[i + 1], 0xa0, 0xaf) &&
        inRange(bytes[i + 2], 0x80, 0xbf) &&
        bytes[i + 3] === 0xed &&
        inRange(bytes[i + 4], 0xb0, 0xbf) &&
        lastOk
      ) {
        const cp = ((bytes[i + 1]! & 0x0f) << 16) + ((bytes[i + 2]! & 0x3f) << 10) + ((bytes[i + 4]! & 0x0f) << 6) + (b5! & 0x3f) + 0x10000;
        out.push(cp);
        i += 6;
        continue;
      }
      return null;
    }
    const len = sequenceLength(bytes, i);
    if (len === 0) return null;
    out.push(codePointAt(bytes, i, len));
    i += len;
  }
  return out.toString();
}
