/**
 * CLIP tokenizer with the exact behaviour of Hugging Face's slow `CLIPTokenizer` (transformers 4.3x) when
 * ftfy is installed, as Stable Diffusion 1.5 pipelines call it:
 * `tokenizer(text, padding="max_length", max_length=77, truncation=True)`.
 *
 * Steps for one prompt:
 *  1. the text is cut around the special tokens written literally in it (`<|startoftext|>`,
 *     `<|endoftext|>`, exact spelling only); those become their own token;
 *  2. every other piece is repaired with ftfy (`fixText`), runs of whitespace become one space, the ends
 *     are trimmed and the text is lower-cased;
 *  3. it is split into words by CLIP's pattern: the special-token spellings, the contractions 's 't 're
 *     've 'm 'll 'd, runs of letters, single digits, runs of other non-space characters;
 *  4. each word is UTF-8 encoded, spelled in the byte-level alphabet and BPE-encoded ('</w>' marks a word
 *     end);
 *  5. ids = [BOS] + first (maxLength - 2) tokens + [EOS], right-padded with the pad id (49407 for SD-1.5,
 *     the same as EOS) to maxLength; attention mask 1 on BOS, tokens and EOS.
 */

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { ERR_INVALID_ARGUMENT, ERR_IO, ERR_WEIGHTS_INVALID, ERR_WEIGHTS_MISSING, XpsrError, describeValue, invalidOption } from '../errors.js';
import { Bpe } from './bpe.js';
import { BYTE_TO_CHAR, CHAR_TO_BYTE, toByteSymbols } from './byte-unicode.js';
import { fixText } from './ftfy.js';

export interface TokenizeResult {
  /** [BOS, tokens (truncated), EOS, pad...], length maxLength (77). */
  ids: Int32Array;
  /** 1 for BOS, tokens and EOS; 0 for padding. Same length as ids. */
  attentionMask: Uint8Array;
  /** All BPE tokens of the text, before truncation (no BOS/EOS). */
  tokens: string[];
  /** The ids of `tokens` (no BOS/EOS, not truncated). */
  untruncatedIds: number[];
  /** True when tokens were dropped to fit maxLength - 2. */
  truncated: boolean;
}

/** The parts of a `tokenizer_config.json` (or `special_tokens_map.json`) that are used. */
export interface ClipTokenizerConfig {
  model_max_length?: number;
  bos_token?: string | { content: string };
  eos_token?: string | { content: string };
  pad_token?: string | { content: string };
  unk_token?: string | { content: string };
  [key: string]: unknown;
}

/** Names used in error messages for the three inputs of {@link ClipTokenizer.fromFiles}. */
export interface ClipTokenizerSources {
  vocab?: string;
  merges?: string;
  config?: string;
}

const DEFAULT_MAX_LENGTH = 77;
/** HF reads at most this many merges (49152 - 256 - 2), whatever the file holds. */
const MAX_MERGES = 49152 - 256 - 2;
/** HF's "no limit configured" sentinel for model_max_length (int(1e30)); anything that large is unset. */
const UNSET_MAX_LENGTH = 1e29;

const DEFAULT_TOKENS = {
  bos: '<|startoftext|>',
  eos: '<|endoftext|>',
  pad: '<|endoftext|>',
  unk: '<|endoftext|>',
} as const;

/**
 * Spellings that CLIP's word pattern and BPE memo treat as one unit. (Part of CLIPTokenizer itself,
 * independent of the configured special tokens.)
 */
const PATTERN_SPECIALS = ['<|startoftext|>', '<|endoftext|>'];

/** Python's whitespace (str.isspace / `re` \s), used for whitespace_clean. */
const PY_WS = '\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** The `regex` module's \s (Unicode White_Space), used in the word pattern. */
const RX_WS = '\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

const WS_RUN_RE = new RegExp(`[${PY_WS}]+`, 'g');

/**
 * CLIP's word pattern. The reference compiles it case-insensitively; the text is lower-cased first, so the
 * only case-insensitive effects left are spelled out: 'ſ' (long s) also matches 's', and U+0345 (combining
 * ypogegrammeni, which case-folds to a letter) is matched by no alternative and therefore dropped.
 */
const WORD_RE = new RegExp(
  ['<\\|[sſ]tartoftext\\|>', '<\\|endoftext\\|>', "'[sſ]|'t|'re|'ve|'m|'ll|'d", '\\p{L}+', '\\p{N}', `[^${RX_WS}\\p{L}\\p{N}\\u0345]+`].join('|'),
  'gu',
);

/** Python's str.isspace() for one UTF-16 unit (all such characters are in the BMP). */
const isPyWs = (c: number): boolean =>
  (c >= 0x09 && c <= 0x0d) ||
  (c >= 0x1c && c <= 0x20) ||
  c === 0x85 ||
  c === 0xa0 ||
  c === 0x1680 ||
  (c >= 0x2000 && c <= 0x200a) ||
  c === 0x2028 ||
  c === 0x2029 ||
  c === 0x202f ||
  c === 0x205f ||
  c === 0x3000;

/** Python's str.strip(). */
function pyStrip(text: string): string {
  let lo = 0;
  let hi = text.length;
  while (lo < hi && isPyWs(text.charCodeAt(lo))) lo++;
  while (hi > lo && isPyWs(text.charCodeAt(hi - 1))) hi--;
  return lo === 0 && hi === text.length ? text : text.slice(lo, hi);
}

/** `whitespace_clean`: runs of whitespace -> one space, then strip. */
function whitespaceClean(text: string): string {
  return pyStrip(text.replace(WS_RUN_RE, ' '));
}

function tokenContent(v: unknown, key: string, where: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: "${key}" must be a string or an object with a "content" string`, {
    file: where,
    key,
  });
}

/**
 * Fast reader for a flat JSON object of string keys and non-negative integer values (vocab.json is ~1 MB
 * with 49k keys, which JSON.parse turns into a slow dictionary object). Returns null on anything
 * unexpected, and the caller falls back to JSON.parse (which also gives the error message).
 */
function scanFlatIntObject(json: string): Map<string, number> | null {
  const map = new Map<string, number>();
  const n = json.length;
  let i = 0;
  const skipWs = (): void => {
    while (i < n) {
      const c = json.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  if (json.charCodeAt(0) === 0xfeff) return null;
  skipWs();
  if (json[i] !== '{') return null;
  i++;
  skipWs();
  if (json[i] === '}') {
    i++;
    skipWs();
    return i === n ? map : null;
  }
  for (;;) {
    if (json[i] !== '"') return null;
    const start = i + 1;
    let j = start;
    let escaped = false;
    for (; j < n; j++) {
      const c = json.charCodeAt(j);
      if (c === 0x22) break;
      if (c === 0x5c) {
        escaped = true;
        j++;
      } else if (c < 0x20) return null;
    }
    if (j >= n) return null;
    let key: string;
    if (escaped) {
      try {
        key = JSON.parse(json.slice(start - 1, j + 1)) as string;
      } catch {
        return null;
      }
    } else key = json.slice(start, j);
    i = j + 1;
    skipWs();
    if (json[i] !== ':') return null;
    i++;
    skipWs();
    let v = 0;
    const digitsStart = i;
    while (i < n) {
      const c = json.charCodeAt(i);
      if (c < 0x30 || c > 0x39) break;
      v = v * 10 + (c - 0x30);
      i++;
    }
    const digits = i - digitsStart;
    if (digits === 0 || digits > 10 || (digits > 1 && json[digitsStart] === '0')) return null;
    map.set(key, v);
    skipWs();
    if (json[i] === ',') {
      i++;
      skipWs();
      continue;
    }
    if (json[i] !== '}') return null;
    i++;
    skipWs();
    return i === n ? map : null;
  }
}

function parseVocab(json: string, where: string): Map<string, number> {
  let vocab = scanFlatIntObject(json);
  if (vocab === null) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch (e) {
      throw new XpsrError(
        ERR_WEIGHTS_INVALID,
        `${where}: not valid JSON (${(e as Error).message})`,
        { file: where },
        {
          cause: e,
        },
      );
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: expected a JSON object mapping tokens to ids`, { file: where });
    }
    vocab = new Map();
    for (const [token, id] of Object.entries(parsed as Record<string, unknown>)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0x7fffffff) {
        throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: token ${JSON.stringify(token)} has invalid id ${JSON.stringify(id)}`, {
          file: where,
          token,
        });
      }
      vocab.set(token, id);
    }
  }
  const seen = new Map<number, string>(); // id -> token, to reject two tokens sharing an id
  for (const [token, id] of vocab) {
    if (id > 0x7fffffff) {
      throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: token ${JSON.stringify(token)} has invalid id ${id}`, {
        file: where,
        token,
      });
    }
    const other = seen.get(id);
    if (other !== undefined) {
      throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: id ${id} is used by both ${JSON.stringify(other)} and ${JSON.stringify(token)}`, {
        file: where,
        id,
      });
    }
    seen.set(id, token);
  }
  // A byte-level BPE vocabulary holds every byte symbol, alone and as a word end.
  for (const sym of BYTE_TO_CHAR) {
    for (const t of [sym, sym + '</w>']) {
      if (!vocab.has(t)) {
        throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: missing byte-level token ${JSON.stringify(t)} (not a CLIP byte-level BPE vocabulary?)`, {
          file: where,
          token: t,
        });
      }
    }
  }
  return vocab;
}

/** Any whitespace other than ' ' and '\n' (the general, slower split path is needed then). */
const UNUSUAL_WS_RE = /[\t\u000b\f\r\u001c-\u001f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

/**
 * Parse merges.txt into merge keys "left right" in rank order. As HF: the file is trimmed, its first line
 * (the '#version' header) is dropped and at most MAX_MERGES lines are read.
 */
function parseMerges(text: string, where: string, vocab: Map<string, number>, vocabWhere: string): string[] {
  if (text.includes('\u0000')) {
    throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: contains NUL bytes (binary or damaged file)`, { file: where });
  }
  const lines = pyStrip(text).split('\n');
  const simple = !UNUSUAL_WS_RE.test(text);
  const keys: string[] = [];
  const last = Math.min(lines.length, MAX_MERGES + 1);
  for (let i = 1; i < last; i++) {
    let line = lines[i]!;
    let sp = line.indexOf(' ');
    const ok = simple && sp > 0 && sp < line.length - 1 && line.indexOf(' ', sp + 1) === -1;
    if (!ok) {
      const parts = line.split(WS_RUN_RE).filter((p) => p !== '');
      if (parts.length !== 2) {
        throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: line ${i + 1} is not a merge of two symbols: ${JSON.stringify(line.slice(0, 80))}`, {
          file: where,
          line: i + 1,
        });
      }
      line = parts[0] + ' ' + parts[1];
      sp = parts[0]!.length;
    }
    if (!vocab.has(line.slice(0, sp) + line.slice(sp + 1))) {
      throw new XpsrError(
        ERR_WEIGHTS_INVALID,
        `${where}: line ${i + 1} merges ${JSON.stringify(line.slice(0, sp))} + ${JSON.stringify(line.slice(sp + 1))} into a token that ${vocabWhere} does not have (mismatched or damaged files?)`,
        { file: where, line: i + 1 },
      );
    }
    keys.push(line);
  }
  if (keys.length === 0) {
    throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: no merges found (expected a '#version' line followed by merges)`, {
      file: where,
    });
  }
  return keys;
}

async function readText(path: string, required: boolean): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      if (!required) return undefined;
      throw new XpsrError(ERR_WEIGHTS_MISSING, `${path}: tokenizer file not found`, { path }, { cause: e });
    }
    throw new XpsrError(ERR_IO, `${path}: cannot read tokenizer file (${code ?? String(e)})`, { path }, { cause: e });
  }
}

function parseJsonConfig(text: string, where: string): ClipTokenizerConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new XpsrError(
      ERR_WEIGHTS_INVALID,
      `${where}: not valid JSON (${(e as Error).message})`,
      { file: where },
      {
        cause: e,
      },
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new XpsrError(ERR_WEIGHTS_INVALID, `${where}: expected a JSON object`, { file: where });
  }
  return parsed as ClipTokenizerConfig;
}

function checkMaxLength(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 2 || v > 1_000_000) {
    throw invalidOption(name, 'an integer >= 2 (room for BOS and EOS)', v);
  }
  return v;
}

export class ClipTokenizer {
  /** Sequence length of `encode` (model_max_length, 77 for CLIP). */
  readonly maxLength: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number;
  /** Number of entries in the vocabulary (49408 for CLIP). */
  readonly vocabSize: number;

  private readonly vocab: Map<string, number>;
  private idToTokenMap: Map<number, string> | undefined;
  private readonly bpe: Bpe;
  /** Spellings cut out of the text before cleaning (the configured special tokens). */
  private readonly specialTokens: readonly string[];

  private constructor(vocab: Map<string, number>, mergeKeys: string[], config: ClipTokenizerConfig, configWhere: string, vocabWhere: string) {
    this.vocab = vocab;
    this.vocabSize = vocab.size;
    this.bpe = new Bpe(mergeKeys, PATTERN_SPECIALS);

    const rawMax = config.model_max_length;
    if (rawMax === undefined || rawMax === null || (typeof rawMax === 'number' && rawMax >= UNSET_MAX_LENGTH)) {
      this.maxLength = DEFAULT_MAX_LENGTH;
    } else if (typeof rawMax === 'number' && Number.isInteger(rawMax) && rawMax >= 2 && rawMax <= 1_000_000) {
      this.maxLength = rawMax;
    } else {
      throw new XpsrError(ERR_WEIGHTS_INVALID, `${configWhere}: "model_max_length" must be an integer >= 2, got ${JSON.stringify(rawMax)}`, {
        file: configWhere,
      });
    }

    const idOf = (key: 'bos' | 'eos' | 'pad' | 'unk'): [string, number] => {
      const token = tokenContent(config[`${key}_token`], `${key}_token`, configWhere) ?? DEFAULT_TOKENS[key];
      const id = vocab.get(token);
      if (id === undefined) {
        throw new XpsrError(ERR_WEIGHTS_INVALID, `${vocabWhere}: has no entry for the ${key} token ${JSON.stringify(token)} (from ${configWhere})`, {
          file: vocabWhere,
          token,
        });
      }
      return [token, id];
    };
    const [bos, bosId] = idOf('bos');
    const [eos, eosId] = idOf('eos');
    const [pad, padId] = idOf('pad');
    const [unk, unkId] = idOf('unk');
    this.bosTokenId = bosId;
    this.eosTokenId = eosId;
    this.padTokenId = padId;
    this.unkTokenId = unkId;
    this.specialTokens = [...new Set([bos, eos, unk, pad])].filter((t) => t !== '');
  }

  /**
   * Load `vocab.json` and `merges.txt` (required) and `tokenizer_config.json` / `special_tokens_map.json`
   * (optional: model_max_length and the bos/eos/pad/unk tokens) from an HF tokenizer folder such as
   * `<sd-1.5>/tokenizer`. Throws XpsrError: ERR_WEIGHTS_MISSING naming a missing file, ERR_WEIGHTS_INVALID
   * naming a corrupt one, ERR_IO for other read failures.
   */
  static async fromDirectory(dir: string): Promise<ClipTokenizer> {
    if (typeof dir !== 'string' || dir === '') {
      throw new XpsrError(ERR_INVALID_ARGUMENT, 'ClipTokenizer.fromDirectory: expected a directory path');
    }
    const vocabPath = join(dir, 'vocab.json');
    const mergesPath = join(dir, 'merges.txt');
    const configPath = join(dir, 'tokenizer_config.json');
    const mapPath = join(dir, 'special_tokens_map.json');
    const [vocabText, mergesText, configText, mapText] = await Promise.all([
      readText(vocabPath, true),
      readText(mergesPath, true),
      readText(configPath, false),
      readText(mapPath, false),
    ]);
    const config: ClipTokenizerConfig = configText !== undefined ? parseJsonConfig(configText, configPath) : {};
    if (mapText !== undefined) {
      // special_tokens_map.json only fills in tokens that tokenizer_config.json does not set.
      const map = parseJsonConfig(mapText, mapPath);
      for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const) {
        if (config[key] === undefined && map[key] !== undefined) config[key] = map[key];
      }
    }
    return ClipTokenizer.fromFiles(vocabText!, mergesText!, config, {
      vocab: vocabPath,
      merges: mergesPath,
      config: configText !== undefined ? configPath : mapPath,
    });
  }

  /**
   * Build from file contents: `vocabJson` (vocab.json text), `mergesTxt` (merges.txt text, first line is
   * the '#version' header) and optionally the parsed tokenizer_config.json. `sources` names the inputs in
   * error messages.
   */
  static fromFiles(vocabJson: string, mergesTxt: string, config?: object, sources: ClipTokenizerSources = {}): ClipTokenizer {
    const vocabWhere = sources.vocab ?? 'vocab.json';
    const mergesWhere = sources.merges ?? 'merges.txt';
    const configWhere = sources.config ?? 'tokenizer_config.json';
    if (typeof vocabJson !== 'string') throw new XpsrError(ERR_INVALID_ARGUMENT, `${vocabWhere}: expected the file's text`);
    if (typeof mergesTxt !== 'string') throw new XpsrError(ERR_INVALID_ARGUMENT, `${mergesWhere}: expected the file's text`);
    if (config !== undefined && (config === null || typeof config !== 'object' || Array.isArray(config))) {
      throw new XpsrError(ERR_INVALID_ARGUMENT, `${configWhere}: expected a config object`);
    }
    const vocab = parseVocab(vocabJson, vocabWhere);
    const merges = parseMerges(mergesTxt, mergesWhere, vocab, vocabWhere);
    return new ClipTokenizer(vocab, merges, { ...(config as ClipTokenizerConfig | undefined) }, configWhere, vocabWhere);
  }

  /** BPE tokens of `text` (what HF's `tokenizer.tokenize(text)` returns); no BOS/EOS, no truncation. */
  tokenize(text: string): string[] {
    if (typeof text !== 'string') {
      throw new XpsrError(ERR_INVALID_ARGUMENT, `ClipTokenizer: expected the prompt as a string, got ${describeValue(text)}`);
    }
    const out: string[] = [];
    for (const piece of this.splitOnSpecialTokens(text)) {
      if (piece.special) out.push(piece.text);
      else if (piece.text !== '') this.tokenizePlain(piece.text, out);
    }
    return out;
  }

  /**
   * Encode one prompt the way SD-1.5 pipelines do (padding to maxLength, truncation).
   * `options.maxLength` overrides the configured length (must be >= 2).
   */
  encode(text: string, options?: { maxLength?: number }): TokenizeResult {
    const maxLength = options?.maxLength === undefined ? this.maxLength : checkMaxLength(options.maxLength, 'maxLength');
    const tokens = this.tokenize(text);
    const untruncatedIds = tokens.map((t) => this.tokenToId(t));
    const room = maxLength - 2;
    const truncated = untruncatedIds.length > room;
    const content = truncated ? untruncatedIds.slice(0, room) : untruncatedIds;
    const ids = this.frame(content, maxLength);
    const attentionMask = new Uint8Array(maxLength);
    attentionMask.fill(1, 0, content.length + 2);
    return { ids, attentionMask, tokens, untruncatedIds, truncated };
  }

  /**
   * Long-prompt option (not what the official pipeline does: that truncates to 75 tokens). The content
   * tokens are cut, in order and without regard to word boundaries, into chunks of `maxLength - 2` (75)
   * tokens; each chunk is framed like a normal prompt, `[BOS, ...chunk, EOS]`, and right-padded with the
   * pad id (49407) to `maxLength` (77). A prompt with no tokens gives one chunk `[BOS, EOS, pad...]`.
   * At most `maxChunks` chunks are returned (the rest of the text is dropped). The caller encodes every
   * chunk separately with the text encoder and concatenates the hidden states along the sequence axis
   * (77·k positions); the negative prompt should be given the same number of chunks.
   */
  encodeChunks(text: string, maxChunks: number = Infinity): Int32Array[] {
    if (maxChunks !== Infinity && (typeof maxChunks !== 'number' || !Number.isInteger(maxChunks) || maxChunks < 1)) {
      throw invalidOption('maxChunks', 'a positive integer', maxChunks);
    }
    const ids = this.tokenize(text).map((t) => this.tokenToId(t));
    const room = this.maxLength - 2;
    const chunks: Int32Array[] = [];
    for (let start = 0; start < ids.length && chunks.length < maxChunks; start += room) {
      chunks.push(this.frame(ids.slice(start, start + room), this.maxLength));
    }
    if (chunks.length === 0) chunks.push(this.frame([], this.maxLength));
    return chunks;
  }

  /**
   * Text of a sequence of ids (HF `decode`): tokens joined, '</w>' read as a space, invalid UTF-8 replaced.
   * Special tokens (BOS, EOS, pad) are skipped unless `skipSpecialTokens` is false.
   */
  decode(ids: ArrayLike<number>, skipSpecialTokens = true): string {
    const special = new Set([this.bosTokenId, this.eosTokenId, this.padTokenId, this.unkTokenId]);
    const bytes: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (skipSpecialTokens && special.has(id)) continue;
      this.idToTokenMap ??= new Map([...this.vocab].map(([t, i]) => [i, t]));
      const token = this.idToTokenMap.get(id);
      if (token === undefined) throw new XpsrError(ERR_INVALID_ARGUMENT, `decode: unknown token id ${id}`);
      for (const c of token) {
        const b = CHAR_TO_BYTE.get(c);
        if (b !== undefined) bytes.push(b);
        else for (const u of new TextEncoder().encode(c)) bytes.push(u);
      }
    }
    return new TextDecoder('utf-8').decode(Uint8Array.from(bytes)).replaceAll('</w>', ' ').trim();
  }

  /** Id of a token string (the unk id when absent, as HF). */
  tokenToId(token: string): number {
    return this.vocab.get(token) ?? this.unkTokenId;
  }

  private frame(content: readonly number[], length: number): Int32Array {
    const ids = new Int32Array(length).fill(this.padTokenId);
    ids[0] = this.bosTokenId;
    ids.set(content, 1);
    ids[content.length + 1] = this.eosTokenId;
    return ids;
  }

  /** Cut out the literal special-token spellings (case-sensitive; the leftmost, then the longest, wins). */
  private splitOnSpecialTokens(text: string): { text: string; special: boolean }[] {
    const pieces: { text: string; special: boolean }[] = [];
    let pos = 0;
    for (;;) {
      let at = -1;
      let found = '';
      for (const s of this.specialTokens) {
        const i = text.indexOf(s, pos);
        if (i !== -1 && (at === -1 || i < at || (i === at && s.length > found.length))) {
          at = i;
          found = s;
        }
      }
      if (at === -1) break;
      pieces.push({ text: text.slice(pos, at), special: false });
      pieces.push({ text: found, special: true });
      pos = at + found.length;
    }
    pieces.push({ text: text.slice(pos), special: false });
    return pieces;
  }

  private tokenizePlain(text: string, out: string[]): void {
    const clean = whitespaceClean(fixText(text)).toLowerCase();
    for (const word of clean.match(WORD_RE) ?? []) {
      for (const t of this.bpe.encode(toByteSymbols(word))) out.push(t);
    }
  }
}
