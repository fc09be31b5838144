import test from 'ava';
import { mkdtemp, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ClipTokenizer, fixText, looksLikeMojibake } from '../dist/lib/tokenizer/index.js';
import { XpsrError } from '../dist/lib/errors.js';

const here = dirname(fileURLToPath(import.meta.url));
const TOKENIZER_DIR = join(here, 'fixtures', 'model', 'tokenizer');
const CASES = JSON.parse(readFileSync(join(here, 'fixtures', 'tokenizer_cases.json'), 'utf8'));

const BOS = 49406;
const EOS = 49407;

let shared;
const load = () => (shared ??= ClipTokenizer.fromDirectory(TOKENIZER_DIR));

async function tempDirWith(files) {
  const dir = await mkdtemp(join(tmpdir(), 'xpsr-tok-'));
  for (const [name, content] of Object.entries(files)) {
    if (content === 'copy') await copyFile(join(TOKENIZER_DIR, name), join(dir, name));
    else await writeFile(join(dir, name), content);
  }
  return dir;
}

// ---- loading -------------------------------------------------------------------------------------

// Load time is reported, not asserted (speed belongs to benchmarks, not tests).
test('loads the SD-1.5 tokenizer folder', async (t) => {
  const t0 = performance.now();
  const tok = await ClipTokenizer.fromDirectory(TOKENIZER_DIR);
  t.log(`load: ${(performance.now() - t0).toFixed(0)} ms`);
  t.is(tok.maxLength, 77);
  t.is(tok.vocabSize, 49408);
  t.is(tok.bosTokenId, BOS);
  t.is(tok.eosTokenId, EOS);
  t.is(tok.padTokenId, EOS);
});

test('fromFiles gives the same tokenizer, and honours model_max_length', async (t) => {
  const vocab = await readFile(join(TOKENIZER_DIR, 'vocab.json'), 'utf8');
  const merges = await readFile(join(TOKENIZER_DIR, 'merges.txt'), 'utf8');
  const a = ClipTokenizer.fromFiles(vocab, merges);
  const b = await load();
  t.deepEqual(a.encode('a red fox in the snow'), b.encode('a red fox in the snow'));
  const short = ClipTokenizer.fromFiles(vocab, merges, { model_max_length: 16 });
  t.is(short.maxLength, 16);
  t.is(short.encode('a photo of a cat').ids.length, 16);
});

// ---- golden cases --------------------------------------------------------------------------------

CASES.cases.forEach((c, i) => {
  test(`case ${String(i).padStart(2, '0')}: ${JSON.stringify(c.text).slice(0, 50)}`, async (t) => {
    const tok = await load();
    const r = tok.encode(c.text);
    t.true(r.ids instanceof Int32Array);
    t.true(r.attentionMask instanceof Uint8Array);
    t.deepEqual(r.tokens, c.tokens, 'tokens');
    t.deepEqual(r.untruncatedIds, c.untruncated_ids, 'untruncated_ids');
    t.deepEqual(Array.from(r.ids), c.input_ids, 'input_ids');
    t.deepEqual(Array.from(r.attentionMask), c.attention_mask, 'attention_mask');
    t.is(r.truncated, c.truncated, 'truncated');
    t.deepEqual(tok.tokenize(c.text), c.tokens, 'tokenize()');
  });
});

// ---- file errors ---------------------------------------------------------------------------------

test('a missing vocab.json is reported by name', async (t) => {
  const dir = await tempDirWith({ 'merges.txt': 'copy' });
  try {
    const err = await t.throwsAsync(ClipTokenizer.fromDirectory(dir), { instanceOf: XpsrError });
    t.is(err.code, 'ERR_WEIGHTS_MISSING');
    t.regex(err.message, /vocab\.json/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a missing merges.txt is reported by name', async (t) => {
  const dir = await tempDirWith({ 'vocab.json': 'copy' });
  try {
    const err = await t.throwsAsync(ClipTokenizer.fromDirectory(dir), { instanceOf: XpsrError });
    t.is(err.code, 'ERR_WEIGHTS_MISSING');
    t.regex(err.message, /merges\.txt/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a corrupt merges.txt is reported by name and line', async (t) => {
  const good = await readFile(join(TOKENIZER_DIR, 'merges.txt'), 'utf8');
  const lines = good.split('\n');
  const variants = {
    'three symbols on a line': [...lines.slice(0, 5), 'a b c', ...lines.slice(5)].join('\n'),
    'a merge whose result is not in the vocabulary': [...lines.slice(0, 5), 'q Ġ', ...lines.slice(5)].join('\n'),
    'binary garbage': '\u0000\u0001\u0002PK\u0003\u0004',
    'header only': '#version: 0.2\n',
  };
  for (const [what, content] of Object.entries(variants)) {
    const dir = await tempDirWith({ 'vocab.json': 'copy', 'merges.txt': content });
    try {
      const err = await t.throwsAsync(ClipTokenizer.fromDirectory(dir), { instanceOf: XpsrError }, what);
      t.is(err.code, 'ERR_WEIGHTS_INVALID', what);
      t.regex(err.message, /merges\.txt/, what);
      if (what !== 'binary garbage' && what !== 'header only') t.regex(err.message, /line 6/, what);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
});

test('a corrupt vocab.json or tokenizer_config.json is reported by name', async (t) => {
  const vocab = await readFile(join(TOKENIZER_DIR, 'vocab.json'), 'utf8');
  const cases = [
    [{ 'vocab.json': vocab.slice(0, 1000), 'merges.txt': 'copy' }, /vocab\.json/],
    [{ 'vocab.json': '{"a": 1, "b": 1}', 'merges.txt': 'copy' }, /vocab\.json/],
    [{ 'vocab.json': '["not", "an", "object"]', 'merges.txt': 'copy' }, /vocab\.json/],
    [{ 'vocab.json': 'copy', 'merges.txt': 'copy', 'tokenizer_config.json': '{ nope' }, /tokenizer_config\.json/],
    [{ 'vocab.json': 'copy', 'merges.txt': 'copy', 'tokenizer_config.json': '{"model_max_length": "77"}' }, /tokenizer_config\.json/],
  ];
  for (const [files, re] of cases) {
    const dir = await tempDirWith(files);
    try {
      const err = await t.throwsAsync(ClipTokenizer.fromDirectory(dir), { instanceOf: XpsrError });
      t.is(err.code, 'ERR_WEIGHTS_INVALID');
      t.regex(err.message, re);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
});

test('tokenizer_config.json is optional (SD-1.5 defaults)', async (t) => {
  const dir = await tempDirWith({ 'vocab.json': 'copy', 'merges.txt': 'copy' });
  try {
    const tok = await ClipTokenizer.fromDirectory(dir);
    t.is(tok.maxLength, 77);
    t.deepEqual(Array.from(tok.encode('hello').ids.slice(0, 4)), [BOS, 3306, EOS, EOS]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---- encode options and long prompts -------------------------------------------------------------

const LONG = CASES.cases.find((c) => c.untruncated_ids.length > 90); // 96 tokens

test('encode({maxLength}) frames and truncates to the given length', async (t) => {
  const tok = await load();
  const r = tok.encode(LONG.text, { maxLength: 10 });
  t.is(r.ids.length, 10);
  t.deepEqual(Array.from(r.ids), [BOS, ...LONG.untruncated_ids.slice(0, 8), EOS]);
  t.deepEqual(Array.from(r.attentionMask), new Array(10).fill(1));
  t.true(r.truncated);
  t.throws(() => tok.encode('x', { maxLength: 1 }), { instanceOf: XpsrError });
});

test('encodeChunks: short prompts give one chunk equal to encode()', async (t) => {
  const tok = await load();
  for (const text of ['', 'a photo of a cat', CASES.cases[11].text]) {
    const chunks = tok.encodeChunks(text);
    t.is(chunks.length, 1);
    t.deepEqual(chunks[0], tok.encode(text).ids);
  }
});

test('encodeChunks: long prompts are cut into [BOS, 75 tokens, EOS] chunks padded to 77', async (t) => {
  const tok = await load();
  const ids = LONG.untruncated_ids;
  const chunks = tok.encodeChunks(LONG.text);
  t.is(chunks.length, 2);
  for (const c of chunks) {
    t.true(c instanceof Int32Array);
    t.is(c.length, 77);
  }
  t.deepEqual(Array.from(chunks[0]), [BOS, ...ids.slice(0, 75), EOS]);
  const rest = ids.slice(75);
  t.deepEqual(Array.from(chunks[1]), [BOS, ...rest, EOS, ...new Array(77 - rest.length - 2).fill(EOS)]);
  // the first chunk is what the official (truncating) path encodes
  t.deepEqual(chunks[0], tok.encode(LONG.text).ids);
  // maxChunks bounds the output
  t.deepEqual(tok.encodeChunks(LONG.text, 1), [chunks[0]]);
  t.throws(() => tok.encodeChunks(LONG.text, 0), { instanceOf: XpsrError });
  t.throws(() => tok.encodeChunks(LONG.text, 1.5), { instanceOf: XpsrError });
});

test('encodeChunks: exactly 75 tokens is one chunk, 150 is two, 151 is three', async (t) => {
  const tok = await load();
  const words = (n) => new Array(n).fill('a').join(' '); // 'a' is one token
  t.is(tok.tokenize(words(75)).length, 75);
  t.is(tok.encodeChunks(words(75)).length, 1);
  t.is(tok.encodeChunks(words(150)).length, 2);
  t.is(tok.encodeChunks(words(151)).length, 3);
  const last = tok.encodeChunks(words(151))[2];
  t.deepEqual(Array.from(last.slice(0, 4)), [BOS, tok.tokenToId('a</w>'), EOS, EOS]);
});

test('decode reverses encode for plain text', async (t) => {
  const tok = await load();
  t.is(tok.decode(tok.encode('a red fox, sitting in snow!').ids), 'a red fox , sitting in snow !');
  t.is(tok.decode(tok.encode('日本語のテキスト').ids), '日本語のテキスト');
});

test('tokenization is stable across the BPE memo', async (t) => {
  const tok = await load();
  const text = 'supercalifragilisticexpialidocious photographs of photographers';
  const first = tok.tokenize(text);
  for (let i = 0; i < 3; i++) t.deepEqual(tok.tokenize(text), first);
});

// ---- ftfy ---------------------------------------------------------------------------------------

test('fixText repairs what ftfy repairs', (t) => {
  const pairs = [
    ['âœ” No problems', '✔ No problems'],
    ['mojibake: cafÃ©', 'mojibake: café'],
    ['voilÃ le travail', 'voilà le travail'],
    ['Broken text&hellip; it&#x2019;s ﬂubberiﬁc!', "Broken text… it's flubberific!"],
    ['ＬＯＵＤ　ＮＯＩＳＥＳ', 'LOUD NOISES'],
    ['P&EACUTE;REZ', 'PÉREZ'],
    ['&ntilde; &Ntilde; &NTILDE; &nTILDE;', 'ñ Ñ Ñ &nTILDE;'],
    ['&amp;amp; twice', '& twice'],
    ['<b>&amp;</b>', '<b>&amp;</b>'],
    ['&amp;\n<i>\n&amp;', '&\n<i>\n&amp;'],
    ['\u001b[36;44mblue\u001b[0m', 'blue'],
    ['a\r\nb\rc\u2028d', 'a\nb\nc\nd'],
    ['cafe\u0301', 'café'],
    ['\ud83d lone', '\ufffd lone'],
    ['\u0000\u0007x\ufeff', 'x'],
    ['“quoted” ‘single’', '"quoted" \'single\''],
    ['&#59; &#0; &#150;', '&#59; \ufffd –'],
  ];
  for (const [input, expected] of pairs) t.is(fixText(input), expected, JSON.stringify(input));
});

test('fixText leaves ordinary non-ASCII text alone', (t) => {
  for (const s of ['café naïve résumé', 'Straße, ÆØÅ, œuvre', 'Привет мир', '日本語', '😀🎉👍🏽 🇫🇷', 'İstanbul', '½ × ² °C']) {
    t.false(looksLikeMojibake(s), s);
    t.is(fixText(s), s);
  }
});

test('fixText matches ftfy 6.3.1 on a reference corpus', (t) => {
  const ref = JSON.parse(readFileSync(join(here, 'fixtures', 'tokenizer_ftfy_reference.json'), 'utf8'));
  t.true(ref.cases.length > 300);
  const wrong = ref.cases.filter((c) => fixText(c.text) !== c.fixed);
  t.deepEqual(
    wrong.slice(0, 5).map((c) => ({ text: c.text, expected: c.fixed, got: fixText(c.text) })),
    [],
    `${wrong.length} of ${ref.cases.length} differ`,
  );
});
