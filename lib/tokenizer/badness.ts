/**
 * The "does this text look like mojibake?" test of ftfy 6 (`is_bad`), re-implemented.
 *
 * Mojibake from decoding UTF-8 with a single-byte code page draws on a few hundred characters (the ones
 * the bytes 0x80..0xFF map to). They are sorted into groups below, and the test looks for short
 * juxtapositions of those groups that ordinary text almost never contains: an accented lowercase letter
 * right before a currency sign, a box-drawing character next to a letter, 'Ã' followed by a
 * no-break space, and so on. The groups and juxtapositions reproduce ftfy 6.3's heuristic so that the
 * same strings are judged broken; the encoding repair in `ftfy.ts` only runs on such strings.
 */

type Range = readonly [number, number];

/** Build a regex class body (without brackets) from code points and [lo, hi] ranges. */
function cls(...items: (number | Range)[]): string {
  const hex = (c: number): string => `\\u{${c.toString(16)}}`;
  return items.map((it) => (typeof it === 'number' ? hex(it) : `${hex(it[0])}-${hex(it[1])}`)).join('');
}

// ---- character groups ----------------------------------------------------------------------------

/** Characters frequent in real text as well as in mojibake (no-break space, dashes, ellipsis...). */
const COMMON = cls(0xa0, 0xad, 0xb7, 0xb4, 0x2013, 0x2014, 0x2015, 0x2026, 0x2019);
/** C1 control characters: in practice only ever produced by mis-decoding. */
const C1 = cls([0x80, 0x9f]);
/** Symbols that are almost never intended (broken bar, currency sign, spacing accents, daggers...). */
const BAD = cls(
  0xa6,
  0xa4,
  0xa8,
  0xac,
  0xaf,
  0xb8,
  0x192,
  0x2c6,
  0x2c7,
  0x2d8,
  0x2db,
  0x2dc,
  0x2020,
  0x2021,
  0x2030,
  0x2310,
  0x25ca,
  0xfffd,
  0xaa,
  0xba,
);
/** Pilcrow and section signs. */
const LAW = cls(0xb6, 0xa7);
const CURRENCY = cls(0xa2, 0xa3, 0xa5, 0x20a7, 0x20ac);
/** Punctuation and symbols that normally open something (inverted marks, opening quotes, bullet...). */
const START_PUNCT = cls(0xa1, 0xab, 0xbf, 0xa9, 0x384, 0x385, 0x2018, 0x201a, 0x201c, 0x201e, 0x2022, 0x2039, 0xf8ff);
/** ... and ones that normally close something. */
const END_PUNCT = cls(0xae, 0xbb, 0x2dd, 0x201d, 0x203a, 0x2122);
/** Mathematical and numeric symbols (superscripts, fractions, operators, numero sign). */
const NUMERIC = cls(
  0xb2,
  0xb3,
  0xb9,
  0xb1,
  0xbc,
  0xbd,
  0xbe,
  0xd7,
  0xb5,
  0xf7,
  0x2044,
  0x2202,
  0x2206,
  0x220f,
  0x2211,
  0x221a,
  0x221e,
  0x2229,
  0x222b,
  0x2248,
  0x2260,
  0x2261,
  0x2264,
  0x2265,
  0x2116,
);
/** Letters that emoticons (kaomoji) use as eyes and mouths; they get more lenient treatment. */
const KAOMOJI = cls([0xd2, 0xd6], [0xd9, 0xdc], [0xf2, 0xf6], [0xf8, 0xfc], 0x150, 0x14c, 0x16a, 0x172, 0xb0);
/** Accented capitals that mis-decoded UTF-8 lead bytes turn into (O/U variants left to KAOMOJI). */
const UPPER_ACCENTED = cls(
  [0xc0, 0xd1],
  0xd8,
  0xdc,
  0xdd,
  0x102,
  0x100,
  0x104,
  0x106,
  0x10c,
  0x10e,
  0x110,
  0x118,
  0x11a,
  0x112,
  0x116,
  0x11e,
  0x122,
  0x130,
  0x12a,
  0x136,
  0x139,
  0x13d,
  0x141,
  0x13b,
  0x143,
  0x147,
  0x145,
  0x152,
  0x158,
  0x15a,
  0x15e,
  0x160,
  0x162,
  0x164,
  0x16e,
  0x170,
  0x178,
  0x179,
  0x17b,
  0x17d,
  0x490,
);
/** Accented lowercase letters (and the fi/fl ligatures) of the same kind. */
const LOWER_ACCENTED = cls(
  0xdf,
  [0xe0, 0xf1],
  0x103,
  0x105,
  0x101,
  0x107,
  0x10d,
  0x10f,
  0x111,
  0x119,
  0x11b,
  0x113,
  0x117,
  0x11f,
  0x123,
  0x12f,
  0x12b,
  0x137,
  0x13a,
  0x13e,
  0x142,
  0x13c,
  0x153,
  0x155,
  0x15b,
  0x15f,
  0x161,
  0x165,
  0xfc,
  0x17a,
  0x17c,
  0x17e,
  0x491,
  0xfb01,
  0xfb02,
);
/** Capital Thorn, Greek and Cyrillic capitals: common letters, also mojibake material. */
const UPPER_COMMON = cls(0xde, [0x391, 0x3a9], 0x386, 0x388, 0x389, 0x38a, 0x38c, 0x38e, 0x38f, 0x3aa, 0x3ab, [0x401, 0x42f]);
/** Greek and Cyrillic lowercase. */
const LOWER_COMMON = cls([0x3b1, 0x3c9], 0x3ac, 0x3ad, 0x3ae, 0x3af, 0x3b0, [0x430, 0x45f]);
/** Box-drawing and block characters (code page 437), minus the plain horizontal line. */
const BOX = cls(
  0x2502,
  0x250c,
  0x2510,
  0x2518,
  0x251c,
  0x2524,
  0x252c,
  0x253c,
  [0x2550, 0x256c],
  0x2580,
  0x2584,
  0x2588,
  0x258c,
  0x2590,
  0x2591,
  0x2592,
  0x2593,
);

/** Python's `\s` (str.isspace) and `\w` (letters, numbers, underscore). */
const PY_SPACE = cls([0x09, 0x0d], [0x1c, 0x20], 0x85, 0xa0, 0x1680, [0x2000, 0x200a], 0x2028, 0x2029, 0x202f, 0x205f, 0x3000);
const PY_WORD = '\\p{L}\\p{N}_';

const any = (...groups: string[]): string => `[${groups.join('')}]`;
const ch = (...cps: number[]): string => `[${cls(...cps)}]`;

// ---- suspicious juxtapositions -------------------------------------------------------------------

const LATIN = 'A-Za-z';
const LETTERS_AND_SYMBOLS = [LOWER_ACCENTED, UPPER_ACCENTED, BOX, START_PUNCT, END_PUNCT, CURRENCY, NUMERIC, LAW];
/** Things that follow the two-byte lead letters Â Ã Î Ð in Windows-1252 mojibake. */
const AFTER_A_HAT = cls(0x20ac, 0x153, 0x160, 0x161, 0xa2, 0xa3, 0x178, 0x17e, 0xa0, 0xad, 0xae, 0xa9, 0xb0, 0xb7, 0xbb, 0x2013, 0x2014, 0xb4);
/** What follows Ø / Ù in Windows-1252 mojibake of Arabic. */
const ARABIC_TAIL = any(COMMON, CURRENCY, BAD, NUMERIC, START_PUNCT, cls(0x178, 0x160, 0xae, 0xb0, 0xb5, 0xbb));
const CYRILLIC_LEADS = ch(0x412, 0x413, 0x420, 0x421); // В Г Р С
const GREEK_LEADS = ch(0x392, 0x393, 0x39e, 0x39f); // Β Γ Ξ Ο

const RULES: string[] = [
  // any C1 control character
  any(C1),
  // an improbable symbol after an accented letter or other symbol, or before one
  any(BAD, ...LETTERS_AND_SYMBOLS) + any(BAD),
  `[${LATIN}]` + any(LOWER_COMMON, UPPER_COMMON) + any(BAD),
  any(BAD) + any(...LETTERS_AND_SYMBOLS),
  // case and class clashes between accented letters and symbols
  any(LOWER_ACCENTED, LOWER_COMMON, BOX, END_PUNCT, CURRENCY, NUMERIC) + any(UPPER_ACCENTED),
  any(BOX, END_PUNCT, CURRENCY, NUMERIC) + any(LOWER_ACCENTED),
  any(LOWER_ACCENTED, BOX, END_PUNCT) + any(CURRENCY),
  any(PY_SPACE) + any(UPPER_ACCENTED) + any(CURRENCY),
  any(UPPER_ACCENTED, BOX) + any(NUMERIC, LAW),
  any(LOWER_ACCENTED, UPPER_ACCENTED, BOX, CURRENCY, END_PUNCT) + any(START_PUNCT) + any(NUMERIC),
  any(LOWER_ACCENTED, UPPER_ACCENTED, CURRENCY, NUMERIC, BOX, LAW) + any(END_PUNCT) + any(START_PUNCT),
  any(CURRENCY, NUMERIC, BOX) + any(START_PUNCT),
  '[a-z]' + any(UPPER_ACCENTED) + any(START_PUNCT, CURRENCY),
  any(BOX) + any(KAOMOJI),
  any(LOWER_ACCENTED, UPPER_ACCENTED, CURRENCY, NUMERIC, START_PUNCT, END_PUNCT, LAW) + any(BOX),
  any(BOX) + any(END_PUNCT),
  any(LOWER_ACCENTED, UPPER_ACCENTED) + any(START_PUNCT, END_PUNCT) + `[${PY_WORD}]`,
  // the oe ligature not followed by an unaccented Latin letter
  ch(0x152, 0x153) + `[^${LATIN}]`,
  // a degree sign after an accented capital
  any(UPPER_ACCENTED) + ch(0xb0),
  // frequent two-character Windows-1252 mojibake
  ch(0xc2, 0xc3, 0xce, 0xd0) + any(AFTER_A_HAT, START_PUNCT, END_PUNCT),
  ch(0xd7) + ch(0xb2, 0xb3),
  // Windows-1252 mojibake of Arabic: two lead/tail pairs in a row
  ch(0xd8, 0xd9) + ARABIC_TAIL + ch(0xd8, 0xd9) + ARABIC_TAIL,
  // Windows-1252 mojibake that starts three-byte sequences of South Asian scripts
  ch(0xe0) + ch(0xb2, 0xb5, 0xb9, 0xbc, 0xbd, 0xbe),
  // MacRoman mojibake
  ch(0x221a) + ch(0xb1, 0x2202, 0x2020, 0x2260, 0xae, 0x2122, 0xb4, 0x2264, 0x2265, 0xa5, 0xb5, 0xf8),
  ch(0x2248) + ch(0xb0, 0xa2),
  ch(0x201a) + ch(0xc4) + ch(0xec, 0xee, 0xef, 0xf2, 0xf4, 0xfa, 0xf9, 0xfb, 0x2020, 0xb0, 0xa2, 0x3c0),
  ch(0x201a) + ch(0xe2, 0xf3) + ch(0xe0, 0xe4, 0xb0, 0xea),
  // Windows-1251 mojibake of the U+2000 block, of Latin-1 / Cyrillic text, and of doubly broken text
  ch(0x432) + ch(0x402),
  CYRILLIC_LEADS + any(C1, BAD, START_PUNCT, END_PUNCT, CURRENCY, cls(0xb0, 0xb5)) + CYRILLIC_LEADS,
  ch(0x413) + ch(0x45e) + ch(0x412) + ch(0x402) + ch(0x412) + '[^\\n]' + '[A-Za-z ]',
  // Windows-1252 forms of 'à', 'á' and of the no-break space itself
  ch(0xc3) + ch(0xa0, 0xa1),
  '[a-z]' + any(PY_SPACE) + '?' + ch(0xc3, 0xc2) + '[ ]',
  '^' + ch(0xc3, 0xc2) + '[ ]',
  // 'Â' standing before the very character it was meant to be
  `[a-z.,?!${END_PUNCT}]` + ch(0xc2) + any(' ', START_PUNCT, END_PUNCT),
  // Windows-1253 mojibake of the U+2000 block and of Latin-1 / Greek text
  ch(0x3b2) + ch(0x20ac) + ch(0x2122, 0xa0, 0x386, 0xad, 0xae, 0xb0),
  GREEK_LEADS + any(C1, BAD, START_PUNCT, END_PUNCT, CURRENCY, cls(0xb0)) + GREEK_LEADS,
  // Windows-1257 mojibake of the U+2000 block
  ch(0x101) + ch(0x20ac),
];

const BADNESS_RE = new RegExp(RULES.join('|'), 'u');
const BADNESS_RE_GLOBAL = new RegExp(RULES.join('|'), 'gu');

/** True when `text` contains at least one sequence that looks like mojibake. */
export function isBad(text: string): boolean {
  return BADNESS_RE.test(text);
}

/** Number of (non-overlapping) mojibake-looking sequences in `text`; > 0 means "probably broken". */
export function badness(text: string): number {
  BADNESS_RE_GLOBAL.lastIndex = 0;
  let n = 0;
  while (BADNESS_RE_GLOBAL.exec(text) !== null) n++;
  return n;
}
