/**
 * Byte-pair encoding with merge ranks, as CLIP (and HF's CLIPTokenizer) applies it to one pre-tokenised
 * word: the word is split into its byte symbols, '</w>' is glued to the last one, and then the adjacent
 * pair with the lowest merge rank is merged (every occurrence, left to right) until no adjacent pair has a
 * rank.
 */

export const END_OF_WORD = '</w>';

export class Bpe {
  /** "left right" -> rank (lower merges first). Symbols never contain a space. */
  private readonly ranks: Map<string, number>;
  private readonly cache = new Map<string, readonly string[]>();
  private readonly pinned: ReadonlyMap<string, readonly string[]>;

  /**
   * @param mergeKeys merges in rank order, each written "left right" (one space), as in merges.txt.
   * @param unsplittable words that are returned as-is (one symbol, no '</w>'), e.g. the special tokens.
   * @param cacheSize bound on the memo of already-encoded words (least recently used are evicted).
   */
  constructor(
    mergeKeys: readonly string[],
    unsplittable: readonly string[] = [],
    private readonly cacheSize = 20_000,
  ) {
    // A pair listed twice keeps its last rank (as a Python dict built from the list would).
    this.ranks = new Map();
    for (let i = 0; i < mergeKeys.length; i++) this.ranks.set(mergeKeys[i]!, i);
    this.pinned = new Map(unsplittable.map((w) => [w, [w]]));
  }

  get mergeCount(): number {
    return this.ranks.size;
  }

  /** Encode one word (already spelled in byte symbols) into BPE symbols. */
  encode(word: string): readonly string[] {
    const pinned = this.pinned.get(word);
    if (pinned !== undefined) return pinned;
    const hit = this.cache.get(word);
    if (hit !== undefined) {
      // refresh LRU position
      this.cache.delete(word);
      this.cache.set(word, hit);
      return hit;
    }
    const result = this.merge(word);
    if (this.cache.size >= this.cacheSize) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(word, result);
    return result;
  }

  private merge(word: string): readonly string[] {
    const chars = Array.from(word);
    if (chars.length === 0) return [];
    let symbols = chars.slice(0, -1);
    symbols.push(chars[chars.length - 1]! + END_OF_WORD);
    if (symbols.length === 1) return symbols;

    for (;;) {
      // the adjacent pair with the lowest rank
      let best = Infinity;
      let first = '';
      let second = '';
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = this.ranks.get(symbols[i]! + ' ' + symbols[i + 1]!);
        if (r !== undefined && r < best) {
          best = r;
          first = symbols[i]!;
          second = symbols[i + 1]!;
        }
      }
      if (best === Infinity) break;
      // merge every occurrence, scanning left to right without overlaps
      const next: string[] = [];
      for (let i = 0; i < symbols.length; ) {
        if (i + 1 < symbols.length && symbols[i] === first && symbols[i + 1] === second) {
          next.push(first + second);
          i += 2;
        } else {
          next.push(symbols[i]!);
          i += 1;
        }
      }
      symbols = next;
      if (symbols.length === 1) break;
    }
    return symbols;
  }
}
