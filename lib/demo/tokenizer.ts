/**
 * The CLIP tokenizer of `xpsr demo` from one small file: CLIP's vocab.json is fully determined by its
 * merges.txt (the 256 byte symbols, the same with '</w>', one token per merge in order, then
 * <|startoftext|> and <|endoftext|>), so only the gzipped merges are shipped (data/demo/clip-merges.txt.gz).
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { ClipTokenizer, type ClipTokenizerConfig } from '../tokenizer/index.js';

/** CLIP reads this many merges (49152 tokens - 256 byte symbols - 2 special tokens). */
const CLIP_MERGES = 49152 - 256 - 2;

/** The byte symbols in CLIP's order (bytes_to_unicode): printable Latin-1 first, then the rest as U+0100... */
function byteSymbols(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const out = printable.map((b) => String.fromCharCode(b));
  let next = 256;
  for (let b = 0; b < 256; b++) if (!printable.includes(b)) out.push(String.fromCharCode(next++));
  return out;
}

/** vocab.json (as text) of the CLIP tokenizer whose merges.txt is `mergesTxt`. */
export function clipVocabFromMerges(mergesTxt: string): string {
  const bytes = byteSymbols();
  const tokens = [...bytes, ...bytes.map((s) => s + '</w>')];
  const lines = mergesTxt.split('\n');
  for (let i = 1; i < lines.length && i <= CLIP_MERGES; i++) {
    const line = lines[i]!.trim();
    if (line) tokens.push(line.replace(' ', ''));
  }
  tokens.push('<|startoftext|>', '<|endoftext|>');
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => (vocab[t] = i));
  return JSON.stringify(vocab);
}

/** The tokenizer from a gzipped merges.txt and the special tokens of `config`. */
export function clipTokenizerFromGzippedMerges(file: string, config: ClipTokenizerConfig): ClipTokenizer {
  const merges = gunzipSync(readFileSync(file)).toString('utf8');
  return ClipTokenizer.fromFiles(clipVocabFromMerges(merges), merges, config, { vocab: `vocab.json derived from ${file}`, merges: file });
}
