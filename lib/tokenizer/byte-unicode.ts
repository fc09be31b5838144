/**
 * GPT-2 / CLIP byte-level alphabet: every byte 0..255 is shown as one printable Unicode character, so that
 * BPE can work on strings without ever seeing whitespace or control characters.
 *
 * Bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the
 * other 68 bytes (controls, space, NBSP, soft hyphen...) are given the code points 256, 257, ... in byte
 * order. For example the space byte 0x20 becomes 'Ġ' (U+0120).
 */

function buildByteToChar(): string[] {
  const table = new Array<string>(256);
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : next++);
  return table;
}

/** BYTE_TO_CHAR[b] = the character that stands for byte b. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** Inverse of BYTE_TO_CHAR. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const encoder = new TextEncoder();

/** UTF-8 encode `text` and spell each byte with the byte-level alphabet. */
export function toByteSymbols(text: string): string {
  const bytes = encoder.encode(text);
  let s = '';
  for (const b of bytes) s += BYTE_TO_CHAR[b]!;
  return s;
}

/** Inverse of toByteSymbols (invalid UTF-8 becomes U+FFFD, like `errors="replace"`). */
export function fromByteSymbols(symbols: string): string {
  const bytes: number[] = [];
  for (const c of symbols) {
    const b = CHAR_TO_BYTE.get(c);
    if (b !== undefined) bytes.push(b);
  }
  return new TextDecoder('utf-8').decode(Uint8Array.from(bytes));
}
