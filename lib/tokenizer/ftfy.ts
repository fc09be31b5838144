/**
 * Text repair equivalent to `ftfy.fix_text(text)` with ftfy 6.3's default configuration, which is what
 * Hugging Face's slow `CLIPTokenizer` applies to every prompt when ftfy is installed.
 *
 * Pipeline, per line (a segment ends after each '\n'), repeated until the segment stops changing:
 *  1. HTML character references are decoded (`&amp;`, `&eacute;`, `&#x27;`...) - unless a '<' has been seen
 *     in this line or an earlier one, in which case the text is taken to be real HTML and left alone;
 *  2. mojibake repair (`fixEncoding`): text that looks like UTF-8 decoded with a single-byte code page is
 *     re-encoded with that code page and decoded as UTF-8 (see `badness.ts` for the detection);
 *  3. C1 controls -> their Windows-1252 characters; Latin ligatures (ﬁ, ﬂ, Ĳ...) -> letters; fullwidth and
 *     halfwidth forms -> normal width; curly quotes -> straight quotes; CR / CRLF / U+2028 / U+2029 / U+0085
 *     -> '\n'; lone surrogates -> U+FFFD; ANSI terminal escapes removed; invisible control characters
 *     removed;
 *  4. NFC normalization.
 *
 * Not included (not part of `fix_text`'s defaults): `decode_escapes`, NFKC, `fix_file`/byte guessing,
 * explanations.
 */

import { isBad } from './badness.js';
import { CHARMAP_CODECS, decodeSingleByte, encodeSingleByte, getCodec } from './charmaps.js';
import { LEGACY_NAMES, NAMED_REFERENCES } from './html-entities.js';
import { decodeUtf8Strict, decodeUtf8Variants } from './utf8.js';

/** Longest segment (in code points) repaired as one unit, as in ftfy. */
const MAX_DECODE_LENGTH = 1_000_000;
/** Safety cap on the "repeat until nothing changes" loops (ftfy has none; real text settles in 1-3). */
const MAX_PASSES = 64;

// ---- HTML character references -------------------------------------------------------------------

let entityTable: Map<string, string> | undefined;

/**
 * '&name;' -> replacement, for every HTML5 reference written with a semicolon, plus an ALL-CAPS spelling
 * for lowercase names (`&EACUTE;` -> 'É') when that spelling means nothing else to an HTML parser.
 */
function entities(): Map<string, string> {
  if (entityTable !== undefined) return entityTable;
  const semicolon = new Map<string, string>(); // 'name' -> value
  for (const entry of NAMED_REFERENCES.split(' ')) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    semicolon.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  // Every key an HTML parser recognises: 'name;' for all, bare 'name' for the legacy ones.
  const known = new Set<string>();
  for (const name of semicolon.keys()) known.add(name + ';');
  for (const name of LEGACY_NAMES.split(' ')) if (name !== '') known.add(name);

  // Would an HTML parser leave '&' + ref alone? It decodes the whole reference if known, otherwise the
  // longest known prefix of at least two characters.
  const parserIgnores = (ref: string): boolean => {
    if (known.has(ref)) return false;
    for (let len = ref.length - 1; len >= 2; len--) if (known.has(ref.slice(0, len))) return false;
    return true;
  };

  const table = new Map<string, string>();
  for (const [name, value] of semicolon) table.set(`&${name};`, value);
  for (const [name, value] of semicolon) {
    if (name !== name.toLowerCase()) continue;
    const upper = name.toUpperCase() + ';';
    if (parserIgnores(upper)) table.set('&' + upper, value.toUpperCase());
  }
  entityTable = table;
  return table;
}

const HTML_REFERENCE_RE = /&#?[0-9A-Za-z]{1,24};/g;
const NUMERIC_REFERENCE_RE = /^&#(?:([0-9]+)|[xX]([0-9A-Fa-f]+));$/;
const WIN1252 = getCodec('sloppy-windows-1252');

/** What an HTML parser makes of a numeric reference to `n`. */
function numericReferenceValue(n: number): string {
  if (n === 0) return '\ufffd';
  if (n === 0x0d) return '\r';
  if (n >= 0x80 && n <= 0x9f) return String.fromCharCode(WIN1252.decodeTable[n]!); // as Windows-1252
  if ((n >= 0xd800 && n <= 0xdfff) || n > 0x10ffff) return '\ufffd';
  const nonCharacter = (n & 0xfffe) === 0xfffe || (n >= 0xfdd0 && n <= 0xfdef);
  const control = (n >= 0x01 && n <= 0x08) || n === 0x0b || (n >= 0x0e && n <= 0x1f) || n === 0x7f;
  if (nonCharacter || control) return '';
  return String.fromCodePoint(n);
}

function decodeReference(ref: string): string {
  const named = entities().get(ref);
  if (named !== undefined) return named;
  const m = NUMERIC_REFERENCE_RE.exec(ref);
  if (m === null) return ref;
  const n = m[1] !== undefined ? parseInt(m[1], 10) : parseInt(m[2]!, 16);
  const value = numericReferenceValue(n);
  // A reference that decodes to something containing ';' is kept as written (as ftfy does).
  return value.includes(';') ? ref : value;
}

/** Decode HTML character references that end in ';' (named ones, ALL-CAPS variants, numeric ones). */
export function unescapeHtml(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(HTML_REFERENCE_RE, decodeReference);
}

// ---- small fixers --------------------------------------------------------------------------------

const ANSI_ESCAPE_RE = /\u001b\[(?:\p{Nd}|;)*[a-zA-Z]/gu;
/** Remove ANSI terminal escape sequences (colours etc.). */
export function removeTerminalEscapes(text: string): string {
  return text.includes('\u001b') ? text.replace(ANSI_ESCAPE_RE, '') : text;
}

/** Curly single quotes and the modifier-letter apostrophe -> "'", curly double quotes -> '"'. */
export function uncurlQuotes(text: string): string {
  return text.replace(/[\u201c-\u201f]/g, '"').replace(/[\u02bc\u2018-\u201b]/g, "'");
}

const LIGATURES: Readonly<Record<string, string>> = {
  '\u0132': 'IJ',
  '\u0133': 'ij',
  '\u0149': '\u02bcn',
  '\u01f1': 'DZ',
  '\u01f2': 'Dz',
  '\u01f3': 'dz',
  '\u01c4': 'D\u017d',
  '\u01c5': 'D\u017e',
  '\u01c6': 'd\u017e',
  '\u01c7': 'LJ',
  '\u01c8': 'Lj',
  '\u01c9': 'lj',
  '\u01ca': 'NJ',
  '\u01cb': 'Nj',
  '\u01cc': 'nj',
  '\ufb00': 'ff',
  '\ufb01': 'fi',
  '\ufb02': 'fl',
  '\ufb03': 'ffi',
  '\ufb04': 'ffl',
  '\ufb05': '\u017ft',
  '\ufb06': 'st',
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'g');
/** Split Latin typographic ligatures and legacy digraph characters into their letters. */
export function fixLatinLigatures(text: string): string {
  return text.replace(LIGATURE_RE, (c) => LIGATURES[c]!);
}

let widthMap: Map<string, string> | undefined;
/** Fullwidth / halfwidth forms (U+FF01..U+FFEF) -> their NFKC equivalent; ideographic space -> ' '. */
export function fixCharacterWidth(text: string): string {
  if (!/[\u3000\uff01-\uffef]/.test(text)) return text;
  if (widthMap === undefined) {
    widthMap = new Map([['\u3000', ' ']]);
    for (let cp = 0xff01; cp < 0xfff0; cp++) {
      const c = String.fromCharCode(cp);
      const alt = c.normalize('NFKC');
      if (alt !== c) widthMap.set(c, alt);
    }
  }
  const map = widthMap;
  return text.replace(/[\u3000\uff01-\uffef]/g, (c) => map.get(c) ?? c);
}

/** CRLF, CR, LINE SEPARATOR, PARAGRAPH SEPARATOR and NEXT LINE -> '\n'. */
export function fixLineBreaks(text: string): string {
  return text.replace(/\r\n|[\r\u2028\u2029\u0085]/g, '\n');
}

/**
 * Lone UTF-16 surrogates -> U+FFFD. (A JavaScript string holds a valid pair as one character already,
 * so only unpaired halves are left to fix.)
 */
export function fixSurrogates(text: string): string {
  return text.replace(/[\ud800-\udfff]/gu, '\ufffd');
}

/**
 * Remove control characters that have no visible effect: C0 controls other than tab, LF, FF, CR; DEL;
 * deprecated Arabic format controls U+206A..U+206F; BOM / zero-width no-break space; interlinear
 * annotation marks and the object replacement character (U+FFF9..U+FFFC). C1 controls, joiners and
 * bidi controls are kept.
 */
export function removeControlChars(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b\u000e-\u001f\u007f\u206a-\u206f\ufeff\ufff9-\ufffc]/g, '');
}

/** C1 control characters -> the characters Windows-1252 has at those bytes (what browsers do). */
export function fixC1Controls(text: string): string {
  return text.replace(/[\u0080-\u009f]/g, (c) => String.fromCharCode(WIN1252.decodeTable[c.charCodeAt(0)]!));
}

// ---- mojibake repair -----------------------------------------------------------------------------

const LATIN1 = getCodec('latin-1');
/** Bytes <-> "binary string" (one char per byte) so that byte patterns can be regexes. */
const toBinary = (b: Uint8Array): string => decodeSingleByte(b, LATIN1);
const fromBinary = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

/**
 * UTF-8 sequences that would be complete if one of their bytes had not been turned from 0xA0 (a
 * no-break space in Windows-1252) into 0x20 (a plain space). Lead bytes are limited to the ones where the
 * restored character is likely (à, Š, Π, Р, ٠, no-break space, common 3-byte and 4-byte blocks).
 */
const SPACE_FOR_A0_RE = new RegExp(
  [
    '[\\xc2\\xc3\\xc5\\xce\\xd0\\xd9] ',
    '[\\xe2\\xe3] [\\x80-\\x84\\x86-\\x9f\\xa1-\\xbf]',
    '[\\xe0-\\xe3][\\x80-\\x84\\x86-\\x9f\\xa1-\\xbf] ',
    '\\xf0 [\\x80-\\xbf]{2}',
    '\\xf0[\\x80-\\xbf] [\\x80-\\xbf]',
    '\\xf0[\\x80-\\xbf]{2} ',
  ].join('|'),
  'g',
);
const SPACE_FOR_A0_TEST_RE = new RegExp(SPACE_FOR_A0_RE.source);
/** 'Ã' + space is usually 'à' + space, except before the Portuguese words it starts or a second space. */
const A_GRAVE_WORD_RE = /\xc3 (?! |quele|quela|quilo|s )/g;

function restoreByteA0(bin: string): string {
  return bin.replace(A_GRAVE_WORD_RE, '\xc3\xa0 ').replace(SPACE_FOR_A0_RE, (m) => m.replace(/ /g, '\xa0'));
}

/**
 * UTF-8 sequences in which a byte was lost: byte 0x1A stands for a character that had already become
 * U+FFFD, and '?' for one that an encoder replaced (at most once per sequence). Each such sequence, and
 * any other 0x1A, becomes the UTF-8 encoding of U+FFFD.
 */
const LOSSY_SEQUENCE_RE = new RegExp(
  [
    '[\\xc2-\\xdf]\\x1a',
    '[\\xc2\\xc3]\\?',
    '\\xed[\\xa0-\\xaf][\\x1a?]\\xed[\\xb0-\\xbf][\\x1a?\\x80-\\xbf]',
    '\\xed[\\xa0-\\xaf][\\x1a?\\x80-\\xbf]\\xed[\\xb0-\\xbf][\\x1a?]',
    '[\\xe0-\\xef][\\x1a?][\\x1a\\x80-\\xbf]',
    '[\\xe0-\\xef][\\x1a\\x80-\\xbf][\\x1a?]',
    '[\\xf0-\\xf4][\\x1a?][\\x1a\\x80-\\xbf]{2}',
    '[\\xf0-\\xf4][\\x1a\\x80-\\xbf][\\x1a?][\\x1a\\x80-\\xbf]',
    '[\\xf0-\\xf4][\\x1a\\x80-\\xbf]{2}[\\x1a?]',
    '\\x1a',
  ].join('|'),
  'g',
);
function replaceLossySequences(bin: string): string {
  return bin.replace(LOSSY_SEQUENCE_RE, '\xef\xbf\xbd');
}

/**
 * Characters that single-byte code pages (Latin-1, Windows-125x, ISO-8859-2; not MacRoman/CP437) show for
 * UTF-8 lead and continuation bytes; used to spot UTF-8 mojibake embedded in otherwise fine text.
 */
function buildUtf8DetectorRe(): RegExp {
  const latinLike = CHARMAP_CODECS.filter((c) => c.name !== 'macroman' && c.name !== 'cp437');
  const charsFor = (bytes: number[]): Set<number> => {
    const s = new Set<number>();
    for (const c of latinLike) for (const b of bytes) s.add(c.decodeTable[b]!);
    return s;
  };
  const range = (lo: number, hi: number): number[] => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
  const esc = (s: Iterable<number>): string => [...s].map((c) => `\\u{${c.toString(16)}}`).join('');
  const lead2 = charsFor(range(0xc2, 0xdf));
  const lead3 = charsFor(range(0xe0, 0xef));
  const lead4 = charsFor([0xf0, 0xf3]);
  const cont = charsFor(range(0x80, 0xbf));
  // Punctuation among the continuation characters that usually stands for itself next to mojibake.
  const selfStanding = [0x2013, 0x2014, 0x2015, 0x2018, 0x2019, 0x201a, 0x201c, 0x201d, 0x201e, 0x2022, 0x2026];
  const contStrict = [...cont].filter((c) => !selfStanding.includes(c));
  const contOrSpace = `[${esc(cont)} ]`; // a space may stand for a lost no-break space
  const seq = `[${esc(lead2)}]${contOrSpace}|[${esc(lead3)}]${contOrSpace}{2}|[${esc(lead4)}]${contOrSpace}{3}`;
  return new RegExp(`(?<![${esc(contStrict)}])(?:${seq})+`, 'gu');
}
let utf8DetectorRe: RegExp | undefined; // global: for replace()
let utf8DetectorTestRe: RegExp | undefined; // non-global: for test()
function hasUtf8Mojibake(text: string): boolean {
  utf8DetectorTestRe ??= new RegExp((utf8DetectorRe ??= buildUtf8DetectorRe()).source, 'u');
  return utf8DetectorTestRe.test(text);
}

/** Repair runs of UTF-8 mojibake embedded in text that, as a whole, no single re-decoding can fix. */
function decodeInconsistentUtf8(text: string): string {
  const re = (utf8DetectorRe ??= buildUtf8DetectorRe());
  return text.replace(re, (sub) => (sub.length < text.length && isBad(sub) ? fixEncoding(sub) : sub));
}

const isAscii = (text: string): boolean => /^[\u0000-\u007f]*$/.test(text);

function fixEncodingStep(text: string): string {
  if (text.length === 0 || isAscii(text) || !isBad(text)) return text;
  let latin1Possible = false;
  // Most likely: UTF-8 that was decoded with one of these single-byte code pages. Undo that.
  for (const codec of CHARMAP_CODECS) {
    const encoded = encodeSingleByte(text, codec);
    if (encoded === null) continue;
    if (codec.name === 'latin-1') latin1Possible = true;
    let bin = toBinary(encoded);
    if (codec.name !== 'macroman' && SPACE_FOR_A0_TEST_RE.test(bin)) bin = restoreByteA0(bin);
    if (codec.sloppy) bin = replaceLossySequences(bin);
    const bytes = fromBinary(bin);
    const decoded = bin.includes('\xed') || bin.includes('\xc0') ? decodeUtf8Variants(bytes) : decodeUtf8Strict(bytes);
    if (decoded !== null) return decoded;
  }
  // Next: fix embedded runs of mojibake piecewise.
  if (hasUtf8Mojibake(text)) {
    const fixed = decodeInconsistentUtf8(text);
    if (fixed !== text) return fixed;
  }
  // Latin-1 text with C1 controls was probably meant as Windows-1252 (strictly: bytes that Windows-1252
  // leaves undefined make this step fail).
  if (latin1Possible) {
    let ok = true;
    let out = '';
    for (let i = 0; i < text.length && ok; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80 && c <= 0x9f) {
        if (c === 0x81 || c === 0x8d || c === 0x8f || c === 0x90 || c === 0x9d) ok = false;
        else out += String.fromCharCode(WIN1252.decodeTable[c]!);
      } else out += text[i];
    }
    if (ok && out !== text) return out;
  }
  if (/[\u0080-\u009f]/.test(text)) return fixC1Controls(text);
  return text;
}

/** ftfy's `fix_encoding`: undo mojibake (repeatedly, for text that was mis-decoded more than once). */
export function fixEncoding(text: string): string {
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const next = fixEncodingStep(text);
    if (next === text) return text;
    text = next;
  }
  return text;
}

// ---- the whole pipeline --------------------------------------------------------------------------

function fixSegment(text: string, decodeHtml: boolean): string {
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const original = text;
    if (decodeHtml) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = fixC1Controls(text);
    text = fixLatinLigatures(text);
    text = fixCharacterWidth(text);
    text = uncurlQuotes(text);
    text = fixLineBreaks(text);
    text = fixSurrogates(text);
    text = removeTerminalEscapes(text);
    text = removeControlChars(text);
    text = text.normalize('NFC');
    if (text === original) break;
  }
  return text;
}

/** Index just past `count` code points from `start` (or text.length). */
function advanceCodePoints(text: string, start: number, count: number): number {
  let i = start;
  for (let k = 0; k < count && i < text.length; k++) {
    const c = text.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
  }
  return i;
}

/**
 * `ftfy.fix_text(text)` with default settings (ftfy 6.3). Lines are repaired independently; once a line
 * contains '<', HTML references are left alone in it and in every later line.
 */
export function fixText(text: string): string {
  const out: string[] = [];
  let decodeHtml = true;
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    let end = nl === -1 ? text.length : nl + 1;
    if (end - pos > MAX_DECODE_LENGTH) end = Math.min(end, advanceCodePoints(text, pos, MAX_DECODE_LENGTH));
    const segment = text.slice(pos, end);
    if (decodeHtml && segment.includes('<')) decodeHtml = false;
    out.push(fixSegment(segment, decodeHtml));
    pos = end;
  }
  return out.join('');
}
